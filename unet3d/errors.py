"""The few exceptions a user may see.

Each one means "the input is wrong, nothing was lost": the command-line entry points print its message as one line
and exit with code 2. Anything else is a bug and exits with code 1.
"""


class UserError(Exception):
    """Base class: a problem with what the user gave us (config, data, checkpoint), not with the program."""


class ConfigError(UserError):
    """The config is invalid: unknown key, wrong type, impossible value, unknown name."""


class DataError(UserError):
    """A data file is missing, unreadable or inconsistent with its case or the config."""


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable, or does not fit the model that the config builds."""


class TrainingDiverged(UserError):
    """The loss or the weights became NaN or infinite; the last finite checkpoint is kept as the resume point."""

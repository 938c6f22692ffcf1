"""The few exceptions a user may see.

A `UserError` means "the input is wrong, nothing was lost": the command-line entry points print its message as one
line and exit with code 2. A `MachineError` means the machine stopped the run (disk full, read-only folder, out of
memory; exit 74), `Busy` that another run holds the work dir (exit 75). Anything else is a bug and exits with 1.
"""


class UserError(Exception):
    """Base class: a problem with what the user gave us (config, data, checkpoint), not with the program."""


class ConfigError(UserError):
    """The config is invalid: unknown key, wrong type, impossible value, unknown name."""


class DataError(UserError):
    """A data file is missing, unreadable or inconsistent with its case or the config."""


class CheckpointError(UserError):
    """A checkpoint is missing, unreadable, or does not fit the model that the config builds."""


class DeviceUnavailable(UserError):
    """A device was asked for (--device, training.device) that torch does not see on this machine."""


class TrainingDiverged(UserError):
    """The loss or the weights became NaN or infinite; the last finite checkpoint is kept as the resume point."""


class MachineError(Exception):
    """The machine, not the input, stopped the run: disk full, read-only folder, no permission, out of memory. What
    was committed before is intact; the message says what to do."""


class Busy(Exception):
    """Another unet3d run holds the work dir (or output folder); the message names it."""


class Terminated(BaseException):
    """SIGTERM arrived (kill, scancel, SLURM's time limit or preemption): raised in the main thread by the commands'
    handler, so the run unwinds like after Ctrl-C and the last completed epoch stays the resume point."""


_termination = {"requested": False}


def request_termination() -> None:
    """Note that SIGTERM arrived. The handler also raises Terminated at once, but Python drops an exception raised
    while a finalizer or weakref callback runs, so the loops call `raise_if_terminated` as well."""
    _termination["requested"] = True


def raise_if_terminated() -> None:
    """Raise Terminated when SIGTERM arrived earlier and its exception was lost (see `request_termination`)."""
    if _termination["requested"]:
        raise Terminated


def out_of_memory(error: BaseException) -> bool:
    """Whether an exception means the process ran out of memory (CPU: MemoryError or torch's allocator; CUDA:
    torch.OutOfMemoryError, a RuntimeError; other accelerators: a RuntimeError saying 'out of memory'), looking
    through the exceptions it wraps (MONAI wraps a transform's error in its own RuntimeError)."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, MemoryError):
            return True
        message = str(current).lower()
        if isinstance(current, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message):
            return True
        current = current.__cause__ or current.__context__
    return False

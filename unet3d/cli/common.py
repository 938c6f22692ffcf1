"""What every command-line entry point shares: logging setup and the mapping of errors to exit codes."""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
import warnings
from collections.abc import Callable

from unet3d.errors import UserError

EXIT_OK, EXIT_FAILURE, EXIT_USER_ERROR = 0, 1, 2


def add_overrides_argument(parser: argparse.ArgumentParser, example: str = "training.n_epochs=50") -> None:
    """`--set KEY.PATH=VALUE` (repeatable, JSON-typed), collected in `args.overrides` for `parse_assignments`."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help=f"override a config value, JSON-typed (e.g. --set {example}); repeatable",
    )


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time of each record (it may be replaced, e.g. under pytest)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(debug: bool = False) -> None:
    """Log lines to stderr; third-party deprecation noise hidden unless debugging."""
    logger = logging.getLogger("unet3d")
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
    if not debug:
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)

    def show(message, category, filename, lineno, file=None, line=None):
        logger.warning("warning: %s", message)

    warnings.showwarning = show


def run_command(main: Callable[[], int], debug: bool = False) -> int:
    """Run a command body: user errors → their message on stderr and exit 2; anything else → traceback, exit 1."""
    try:
        return main()
    except UserError as error:
        for line in str(error).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume from the last completed epoch", file=sys.stderr)
        return 130
    except Exception:
        traceback.print_exc()
        print(
            "error: unexpected failure (a bug in unet3d or its dependencies); the traceback is above", file=sys.stderr
        )
        return EXIT_FAILURE

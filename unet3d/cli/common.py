"""What every command-line entry point shares: logging setup and the mapping of errors to exit codes."""

from __future__ import annotations

import logging
import sys
import traceback
import warnings
from collections.abc import Callable

from unet3d.errors import UserError

EXIT_OK, EXIT_FAILURE, EXIT_USER_ERROR = 0, 1, 2


def setup_logging(debug: bool = False) -> None:
    """Log lines to stderr; third-party deprecation noise hidden unless debugging."""
    logger = logging.getLogger("unet3d")
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    if not any(getattr(h, "_unet3d_console", False) for h in logger.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        handler._unet3d_console = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
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

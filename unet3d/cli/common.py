"""What every command-line entry point shares: logging setup and the mapping of errors to exit codes."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from unet3d.errors import Busy, MachineError, Terminated, UserError, out_of_memory, request_termination

EXIT_OK, EXIT_FAILURE, EXIT_USER_ERROR = 0, 1, 2
EXIT_MACHINE = 74  # the machine stopped the run: disk full, read-only folder, no permission, out of memory (EX_IOERR)
EXIT_BUSY = 75  # another run holds the work dir: try again later (EX_TEMPFAIL)
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143  # Ctrl-C; SIGTERM (kill, SLURM's time limit or preemption)
OUT_OF_MEMORY = (
    "out of memory; lower training.batch_size, dataset.desired_shape or the sliding window's sw_batch_size, or "
    "use fewer loader workers (--nthreads); rerun the same command to resume from the last completed epoch"
)


def _terminate(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second SIGTERM (bash forwarding it) must not cut the unwind
    request_termination()
    # The exception lands wherever the main thread is, possibly inside a library building an object; that object's
    # finalizer may then fail ("Exception ignored in ... __del__"). The run is ending: such noise is not reported.
    sys.unraisablehook = lambda unraisable: None
    raise Terminated


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


def add_device_arguments(parser: argparse.ArgumentParser, default: str = "training.device") -> None:
    """`--device auto|cpu|cuda|npu|xpu|mps` (None when not given: `default` decides); the name is checked when the
    work begins (`unet3d.devices.device_type`), so that parsing, `--help` included, does not import torch."""
    parser.add_argument(
        "--device",
        help=f"auto, cpu, cuda, npu, xpu or mps: where to run (default: {default}); auto takes torch's accelerator "
        "when it has a device, else the CPU; a named device that is absent is an error",
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


def run_parsed(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    body: Callable[[Any], int],
    inputs: Mapping[str, str] | None = None,
) -> int:
    """A command's `main`: parse `argv` (the parser has --debug), set up logging, refuse an input that does not exist
    (`inputs`: argument name → what it is), then run `body(args)` through `run_command`. The check comes before
    `body` imports the library (torch and MONAI take seconds), so a mistyped path is answered at once."""
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    return run_command(lambda: check_inputs_exist(args, inputs or {}) or body(args))


def check_inputs_exist(args: argparse.Namespace, inputs: Mapping[str, str]) -> None:
    """A UserError naming every path among `inputs` (argument name → what it is) that does not exist."""
    missing = []
    for name, what in inputs.items():
        value = getattr(args, name, None)
        for path in value if isinstance(value, (list, tuple)) else [value]:
            if path is not None and not os.path.lexists(path):
                missing.append(f"{path}: {what} does not exist")
    if missing:
        raise UserError("\n".join(missing))


def _rank() -> int:
    return int(os.environ.get("RANK", 0))


def _print_error(message: str) -> None:
    """Print `message` as error lines; under torchrun a rank other than 0 names itself."""
    prefix = f"error: rank {_rank()}: " if _rank() else "error: "
    for line in message.splitlines():
        print(f"{prefix}{line}", file=sys.stderr)


def run_command(main: Callable[[], int]) -> int:
    """Run a command body and map its end to an exit code (see the README's "Safety and failure behaviour"): user
    errors 2, the machine (disk, permissions, memory) 74, a busy work dir 75, Ctrl-C 130, SIGTERM 143, each with a
    message and no traceback; anything else is a bug: traceback, exit 1."""
    previous = (
        signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    )
    try:
        return main()
    except UserError as error:
        _print_error(str(error))
        return EXIT_USER_ERROR
    except MachineError as error:
        _print_error(str(error))
        return EXIT_MACHINE
    except Busy as error:
        _print_error(str(error))
        return EXIT_BUSY
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume from the last completed epoch", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Terminated:
        if not _rank():  # the other ranks end with rank 0, or are stopped by torchrun after another rank failed
            print(
                "terminated (SIGTERM); rerun the same command to resume from the last completed epoch", file=sys.stderr
            )
        return EXIT_TERMINATED
    except Exception as error:
        if out_of_memory(error):
            _print_error(OUT_OF_MEMORY)
            return EXIT_MACHINE
        traceback.print_exc()
        print(
            "error: unexpected failure (a bug in unet3d or its dependencies); the traceback is above", file=sys.stderr
        )
        return EXIT_FAILURE
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)

"""`python -m unet3d.cli.launch TORCHRUN_ARGS -m unet3d.cli.train ARGS`: torchrun (one process per device), ending
the way unet3d's commands end.

torchrun itself turns a worker's exit into a `ChildFailedError` traceback and exit 1, and its own SIGTERM into a
`SignalException` traceback. Here the workers have printed their one line already (rank 0's), so the launcher
prints nothing more and exits with the first failed worker's code: 2 bad input, 74 the machine, 75 a busy work dir,
143 SIGTERM, as `unet3d-train` alone would.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence


def exit_code(code: int) -> int:
    """A worker's exit code as a shell reports it: a death by signal N (negative in torch's record) is 128 + N."""
    return 128 - code if code < 0 else code


def main(argv: Sequence[str] | None = None) -> int:
    """Run torchrun's launcher with `argv` and return the exit code of the first worker that failed (0 if none)."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # torchrun logs each failed worker as an error; the worker's own message says what happened.
    logging.getLogger("torch.distributed.elastic.multiprocessing.api").setLevel(logging.CRITICAL)
    try:
        run(parse_args(list(sys.argv[1:] if argv is None else argv)))
    except SignalException as stop:
        return 128 + int(stop.sigval)
    except ChildFailedError as failed:
        return exit_code(failed.get_first_failure()[1].exitcode)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

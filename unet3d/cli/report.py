"""`unet3d-report WORK_DIR`: (re)write `<WORK_DIR>/report.html`, the experiment on one page (see
`unet3d.experiment.report`); cross-validations and single runs write it themselves when they end."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from unet3d.cli.common import EXIT_OK, run_parsed
from unet3d.errors import ConfigError

# The paths a run reads, refused at once when they do not exist (before the library is imported).
INPUTS = {"work_dir": "work dir"}


def build_parser() -> argparse.ArgumentParser:
    """The command line of `unet3d-report`."""
    parser = argparse.ArgumentParser(prog="unet3d-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("work_dir", type=Path, help="a cross-validation or single-run work dir")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace a report.html in WORK_DIR that unet3d did not write"
    )
    parser.add_argument("--debug", action="store_true", help="verbose log and third-party warnings")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and write the report; returns the exit code (0 ok, 2 not a work dir)."""
    return run_parsed(build_parser(), argv, run, INPUTS)


def run(args: argparse.Namespace) -> int:
    """The command's work, on parsed arguments."""
    from unet3d.experiment.report import runs_of, write_report

    if not args.work_dir.is_dir() or not runs_of(args.work_dir):
        raise ConfigError(f"{args.work_dir}: not a unet3d work dir (no training_log.csv in it or in fold*/)")
    print(f"wrote {write_report(args.work_dir, overwrite=args.overwrite)}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())

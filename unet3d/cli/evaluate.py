"""`unet3d-evaluate`: score predicted label maps against the ground truth (Dice and HD95 per region, per case).

Parses the arguments and calls `unet3d.evaluation.evaluate.evaluate`: the ground truth from the config's
`<group>_filenames` (default: validation) or `--ground_truth DIR`; writes metrics.csv (one row per case, then mean,
median, sd and n_nan) and prints the summary.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from unet3d.cli.common import EXIT_OK, run_parsed

# The paths a run reads, refused at once when they do not exist (before the library is imported).
INPUTS = {
    "predictions": "predictions folder",
    "config_filename": "config",
    "ground_truth": "ground-truth folder",
}


def build_parser() -> argparse.ArgumentParser:
    """The command line of `unet3d-evaluate` (its flags are documented in the README's command tables)."""
    parser = argparse.ArgumentParser(prog="unet3d-evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--predictions", required=True, type=Path, metavar="DIR", help="folder of <case_id>.nii.gz label maps"
    )
    parser.add_argument(
        "--config_filename", required=True, type=Path, help="experiment config (JSON): labels and the cases"
    )
    parser.add_argument(
        "--group",
        default="validation",
        metavar="X",
        help="score the cases of <X>_filenames (default: validation)",
    )
    parser.add_argument(
        "--ground_truth",
        type=Path,
        metavar="DIR",
        help="take the ground truth from DIR/<case_id>.nii.gz for every prediction instead of the config's cases",
    )
    parser.add_argument("--output", type=Path, metavar="FILE", help="CSV to write (default: <predictions>/metrics.csv)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --output that is not a metrics table (never an input: the config, its cases, "
        "the predictions)",
    )
    parser.add_argument("--debug", action="store_true", help="verbose log and third-party warnings")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, score the predictions, print the summary; returns the exit code (0 ok, 2 bad input)."""
    return run_parsed(build_parser(), argv, run, INPUTS)


def run(args: argparse.Namespace) -> int:
    """The command's work, on parsed arguments."""
    from unet3d.evaluation.evaluate import evaluate
    from unet3d.evaluation.metrics import METRICS_FILENAME, format_summary

    output = args.output if args.output is not None else args.predictions / METRICS_FILENAME
    table = evaluate(
        args.predictions, args.config_filename, args.group, args.ground_truth, output, overwrite=args.overwrite
    )
    print(format_summary(table))
    print(f"{len(table)} cases; metrics in {output.resolve()}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())

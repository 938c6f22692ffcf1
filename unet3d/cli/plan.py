"""`unet3d-plan`: derive a config from the data (spacing, patch, network, normalization, augmentation, folds).

Parses the arguments and calls `unet3d.planning.plan.plan_experiment`, which checks every file, then writes the
config, `<name>.fingerprint.json` and `<name>.data_report.txt` (the cases that stand out) beside it; the report is
printed too. Then `unet3d-train --config_filename OUT.json` runs the cross-validation.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from unet3d.cli.common import EXIT_OK, run_parsed

# The paths a run reads, refused at once when they do not exist (before the library is imported).
INPUTS = {"dataset": "data set"}


def build_parser() -> argparse.ArgumentParser:
    """The command line of `unet3d-plan` (its flags are documented in the README's command tables)."""
    parser = argparse.ArgumentParser(prog="unet3d-plan", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dataset",
        required=True,
        type=Path,
        metavar="PATH",
        help="an MSD or nnU-Net v2 data-set folder (or its dataset.json), or a .json/.npy case list (paths relative "
        "to the list's folder)",
    )
    parser.add_argument("--config_filename", required=True, type=Path, metavar="OUT", help="config to write (JSON)")
    parser.add_argument("--gpu_memory_gb", type=float, default=8.0, help="memory a training step may use (default 8)")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda", "npu", "xpu", "mps", "gpu"),
        default="cuda",
        help="the device to plan for, as --device of unet3d-train names it: an accelerator (mixed precision, nnU-Net's "
        "widths; default cuda; gpu is its earlier name) or cpu (narrower, shorter); auto: this machine's",
    )
    parser.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("X", "Y", "Z"),
        help="target voxel spacing in mm (RAS order) instead of the planned one; the patch and network follow it",
    )
    parser.add_argument("--n_folds", type=int, default=5, help="cross-validation folds (default 5)")
    parser.add_argument("--nthreads", type=int, default=None, help="threads reading the cases")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing config, fingerprint or data report (never a file of the data set)",
    )
    parser.add_argument("--debug", action="store_true", help="verbose log and third-party warnings")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, plan, print the data report; returns the exit code (0 ok, 2 bad input)."""
    return run_parsed(build_parser(), argv, run, INPUTS)


def run(args: argparse.Namespace) -> int:
    """The command's work, on parsed arguments."""
    from unet3d.planning.plan import plan_experiment

    plan = plan_experiment(
        args.dataset,
        args.config_filename,
        gpu_memory_gb=args.gpu_memory_gb,
        device=args.device,
        n_folds=args.n_folds,
        n_threads=args.nthreads,
        overwrite=args.overwrite,
        spacing=args.spacing,
    )
    print(plan.report, end="")
    print(f"config in {plan.config_path}; run it with: unet3d-train --config_filename {plan.config_path}")
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())

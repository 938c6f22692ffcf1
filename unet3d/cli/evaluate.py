"""`unet3d-evaluate`: score predicted label maps against the ground truth (Dice and HD95 per region, per case).

Predictions are `<case_id>.nii.gz` label maps in each case's original space. The regions come from the config's
`labels` and `setup_label_hierarchy`; the ground truth from the config's `<group>_filenames` (default: validation),
or from `--ground_truth DIR` (`DIR/<case_id>.nii.gz` for every prediction found). Writes metrics.csv (one row per
case, then mean, median, sd and n_nan) and prints the summary.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from unet3d.cli.common import EXIT_OK, run_command, setup_logging
from unet3d.config.load import case_id_from_path, load_config
from unet3d.config.schema import Case, Config
from unet3d.data.labels import channel_groups, region_names
from unet3d.errors import ConfigError, DataError
from unet3d.evaluation.metrics import (
    METRICS_FILENAME,
    evaluate_directory,
    find_label_map,
    format_summary,
    label_map_files,
)
from unet3d.registry import suggest


def build_parser() -> argparse.ArgumentParser:
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
    parser.add_argument(
        "--output", type=Path, metavar="FILE", help=f"CSV to write (default: <predictions>/{METRICS_FILENAME})"
    )
    parser.add_argument("--debug", action="store_true", help="verbose log and third-party warnings")
    return parser


def cases_from_folders(predictions: Path, ground_truth: Path) -> list[Case]:
    """One case per label map `<case_id>.nii.gz` (or .png, .mhd, ...) in `predictions`, its label the file of the
    same case id in `ground_truth` (of any image format)."""
    for folder, role in ((predictions, "predictions"), (ground_truth, "ground-truth")):
        if not folder.is_dir():
            raise DataError(f"{folder}: {role} folder does not exist")
    files = label_map_files(predictions)
    if not files:
        raise DataError(f"{predictions}: no prediction files (<case_id>.nii.gz, .png, .mhd, ...)")
    cases = []
    for path in files:
        case_id = case_id_from_path(path)
        cases.append(
            Case(images=[], label=find_label_map(ground_truth, case_id) or ground_truth / path.name, case_id=case_id)
        )
    return cases


def config_cases(config: Config, group: str) -> list[Case]:
    """The cases of `<group>_filenames`; a ConfigError naming the groups the config has otherwise."""
    if group not in config.groups:
        have = ", ".join(f"{g}_filenames" for g in config.groups) or "none"
        raise ConfigError(
            f"{group}_filenames: not in {config.source}{suggest(group, config.groups)} (groups there: {have}); "
            "choose one with --group, or give --ground_truth"
        )
    return config.groups[group]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, score the predictions, print the summary; returns the exit code (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.debug)

    def body() -> int:
        config = load_config(args.config_filename)
        if not config.labels:
            raise ConfigError("dataset.labels: required to know which regions to score, e.g. [1] or [2, 1, 4]")
        groups = channel_groups(config.labels, config.dataset.setup_label_hierarchy)
        if args.ground_truth is not None:
            cases = cases_from_folders(args.predictions, args.ground_truth)
        else:
            cases = config_cases(config, args.group)
        output = args.output if args.output is not None else args.predictions / METRICS_FILENAME
        table = evaluate_directory(args.predictions, cases, groups, region_names(groups), output=output)
        print(format_summary(table))
        print(f"{len(table)} cases; metrics in {output.resolve()}")
        return EXIT_OK

    return run_command(body, debug=args.debug)


if __name__ == "__main__":
    raise SystemExit(main())

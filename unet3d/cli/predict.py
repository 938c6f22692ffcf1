"""`unet3d-predict`: apply one model, or an ensemble of fold models, to new cases.

Writes one label map per case (`<case_id>.nii.gz`) in the case's original space, with the original label values;
with labelled cases also `metrics.csv` (Dice and HD95 per region).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from unet3d.cli.common import EXIT_OK, add_device_arguments, check_inputs_exist, run_command, setup_logging

log = logging.getLogger("unet3d")


# The paths a run reads, refused at once when they do not exist (before the library is imported).
INPUTS = {
    "model_filename": "checkpoint",
    "model_dirs": "work dir",
    "config_filename": "config",
    "input": "input folder or case list",
    "postprocessing": "postprocessing decision",
}


def build_parser() -> argparse.ArgumentParser:
    """The command line of `unet3d-predict` (its flags are documented in the README's command tables)."""
    parser = argparse.ArgumentParser(prog="unet3d-predict", description=__doc__.split("\n\n")[0])
    models = parser.add_argument_group("models (several are ensembled by averaging their probabilities)")
    models.add_argument("--model_filename", type=Path, nargs="+", default=[], help="checkpoint file(s)")
    models.add_argument(
        "--model_dirs",
        "--fold_dirs",
        type=Path,
        nargs="+",
        default=[],
        help="fold folders, or a cross-validation work dir for all of its folds' best models",
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--config_filename",
        type=Path,
        help="config for preprocessing and labels (default: the one saved in the first model)",
    )
    data.add_argument("--group", help="predict the config's <group>_filenames, e.g. validation or test")
    data.add_argument(
        "--input",
        type=Path,
        help="a folder of cases (found by the config's modality file endings) or a .json/.npy list",
    )
    data.add_argument(
        "--modality_suffixes",
        nargs="+",
        help="file endings of the modalities in --input, in channel order (default: from the config)",
    )
    parser.add_argument("--output_directory", type=Path, required=True, help="where the label maps go")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing files of the same names in an output folder that no unet3d prediction wrote into "
        "(never an input: no case of the data, of the config or of a model's own config, no model or config)",
    )
    parser.add_argument("--activation", choices=("sigmoid", "softmax"), help="override the loss-derived activation")
    parser.add_argument("--threshold", type=float, default=0.5, help="sigmoid threshold (default 0.5)")
    parser.add_argument("--tta", action="store_true", help="average over all mirrorings of the spatial axes")
    parser.add_argument(
        "--save_probabilities",
        action="store_true",
        help="also write <case_id>_probabilities.nii.gz (channels last, 8-bit, scaled to [0, 1])",
    )
    parser.add_argument(
        "--postprocessing",
        type=Path,
        help="a postprocessing.json to apply (default: the one in the CV work dir given to --model_dirs)",
    )
    parser.add_argument("--no_postprocessing", action="store_true", help="write the raw predictions")
    parser.add_argument(
        "--allow_partial",
        action="store_true",
        help="ensemble the folds of --model_dirs that exist even when some are missing or unfinished",
    )
    parser.add_argument(
        "--sw_batch_size", type=int, help="sliding windows per forward pass (default: the config's; 1 on the CPU)"
    )
    parser.add_argument(
        "--stitch_on_cpu",
        action="store_true",
        help="assemble sliding-window outputs in CPU memory (volumes too large for the device)",
    )
    add_device_arguments(parser, default="auto")
    parser.add_argument(
        "--n_devices", "--ngpus", dest="n_devices", type=int, default=1, help="0 forces the CPU (default 1)"
    )
    parser.add_argument("--nthreads", type=int, default=0, help="threads for checking the input files")
    parser.add_argument("--debug", action="store_true", help="verbose log")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and predict; returns the exit code (0 ok, 1 failure, 2 bad input)."""
    args = build_parser().parse_args(argv)
    setup_logging(args.debug)

    def body() -> int:
        check_inputs_exist(args, INPUTS)
        from unet3d.prediction import predict

        result = predict(
            args.output_directory,
            model_filenames=args.model_filename,
            model_dirs=args.model_dirs,
            config_filename=args.config_filename,
            group=args.group,
            input_path=args.input,
            modality_suffixes=args.modality_suffixes,
            activation=args.activation,
            threshold=args.threshold,
            tta=args.tta,
            n_devices=args.n_devices,
            device=args.device or "auto",
            n_workers=args.nthreads,
            sw_batch_size=args.sw_batch_size,
            stitch_on_cpu=args.stitch_on_cpu,
            save_probabilities=args.save_probabilities,
            postprocessing=args.postprocessing,
            use_postprocessing=not args.no_postprocessing,
            allow_partial=args.allow_partial,
            overwrite=args.overwrite,
        )
        if result.metrics is not None:
            print(f"metrics in {args.output_directory / 'metrics.csv'}")
        print(f"{len(result.paths)} label maps in {args.output_directory}")
        return EXIT_OK

    return run_command(body)


if __name__ == "__main__":
    raise SystemExit(main())

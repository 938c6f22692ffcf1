"""`unet3d-export`: a trained network as TorchScript, ONNX or a MONAI bundle, checked against its checkpoint.

Parses the arguments and calls `unet3d.deployment.export_model`, which writes the network and `<output>.json` (the
inputs, preprocessing, sliding window and decoding a deployer needs), or with `--format bundle` a MONAI bundle folder,
and reports the largest difference between the exported network and the checkpoint's on a random input of the
training patch size.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from unet3d.cli.common import EXIT_OK, run_parsed
from unet3d.errors import ConfigError

# The paths a run reads, refused at once when they do not exist (before the library is imported).
INPUTS = {"model_filename": "checkpoint", "config_filename": "config", "license": "licence file"}


def build_parser() -> argparse.ArgumentParser:
    """The command line of `unet3d-export` (its flags are documented in the README's command tables)."""
    parser = argparse.ArgumentParser(prog="unet3d-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_filename", required=True, type=Path, metavar="M", help="checkpoint (.pth)")
    parser.add_argument(
        "--config_filename", type=Path, metavar="C", help="config (default: the one saved in the checkpoint)"
    )
    parser.add_argument("--format", default="torchscript", help="torchscript (default), onnx or bundle (MONAI's)")
    parser.add_argument(
        "--output", required=True, type=Path, metavar="PATH", help="file to write (model.ts), or the bundle's folder"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --output (and <output>.json) that an earlier export did not write (never the "
        "checkpoint, a config or a work dir's files)",
    )
    parser.add_argument("--authors", help="bundle: the model's authors for its metadata (default: your user name)")
    parser.add_argument(
        "--license", type=Path, metavar="FILE", help="bundle: the licence of the weights, copied into its LICENSE"
    )
    parser.add_argument("--debug", action="store_true", help="verbose log and third-party warnings")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, export and check; returns the exit code (0 ok, 2 bad input or a failed check)."""
    return run_parsed(build_parser(), argv, run, INPUTS)


def run(args: argparse.Namespace) -> int:
    """The command's work, on parsed arguments."""
    from unet3d.deployment import export_model

    if args.format != "bundle" and (args.authors or args.license):
        raise ConfigError("--authors and --license: only for --format bundle")
    result = export_model(
        args.model_filename,
        args.output,
        args.format,
        args.config_filename,
        overwrite=args.overwrite,
        authors=args.authors,
        license_file=args.license,
    )
    print(
        f"wrote {result.path} ({args.format}) and {result.sidecar}; on a random {list(result.input_shape)} input "
        f"it differs from the checkpoint's network by at most {result.max_difference:.3g}"
    )
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())

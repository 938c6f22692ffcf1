"""`unet3d-export`: a trained network as TorchScript or ONNX for deployment, checked against its checkpoint.

Parses the arguments and calls `unet3d.deployment.export_model`, which writes the network and `<output>.json` (the
inputs, preprocessing, sliding window and decoding a deployer needs) and reports the largest difference between the
exported network and the checkpoint's on a random input of the training patch size.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from unet3d.cli.common import EXIT_OK, run_parsed


def build_parser() -> argparse.ArgumentParser:
    """The command line of `unet3d-export` (its flags are documented in the README's command tables)."""
    parser = argparse.ArgumentParser(prog="unet3d-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_filename", required=True, type=Path, metavar="M", help="checkpoint (.pth)")
    parser.add_argument(
        "--config_filename", type=Path, metavar="C", help="config (default: the one saved in the checkpoint)"
    )
    parser.add_argument("--format", default="torchscript", help="torchscript (default) or onnx")
    parser.add_argument("--output", required=True, type=Path, metavar="FILE", help="file to write, e.g. model.ts")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --output (and <output>.json) that an earlier export did not write (never the "
        "checkpoint, a config or a work dir's files)",
    )
    parser.add_argument("--debug", action="store_true", help="verbose log and third-party warnings")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, export and check; returns the exit code (0 ok, 2 bad input or a failed check)."""
    return run_parsed(build_parser(), argv, run)


def run(args: argparse.Namespace) -> int:
    """The command's work, on parsed arguments."""
    from unet3d.deployment import export_model

    result = export_model(args.model_filename, args.output, args.format, args.config_filename, overwrite=args.overwrite)
    print(
        f"wrote {result.path} ({args.format}) and {result.sidecar}; on a random {list(result.input_shape)} input "
        f"it differs from the checkpoint's network by at most {result.max_difference:.3g}"
    )
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())

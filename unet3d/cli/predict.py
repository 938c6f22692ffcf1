"""`unet3d-predict`: apply trained models to new data (not built yet)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Say plainly that prediction is not available in this release, and exit with code 1."""
    print(
        "unet3d-predict is not built yet: volumetric prediction, metrics and ensembling come in a later release. "
        "Training writes model_best.pth and the resolved config.json in its work dir for when it lands.",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    raise SystemExit(main())

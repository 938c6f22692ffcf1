"""Write the synthetic BraTS-like cases that `nnunet_style_config.json` trains on (4 modalities, labels 2 ⊃ 1 ⊃ 4).

Run from anywhere: `python examples/nnunet_style/make_data.py [--output DIR]`. It writes 12 labelled cases to
`DIR/training/` (listed in the config) and 2 unlabelled ones to `DIR/test/` (for `unet3d-predict --input`); DIR is
`examples/nnunet_style/data/` by default. The volumes are 32-40 voxels per axis (at least the 32³ training patch),
with varied voxel spacings and orientations and non-zero backgrounds (a level between -300 and 300 per modality);
the enhancing tumour covers only 36-108 voxels per case, a small structure that short schedules easily miss. The
same seeds always give the same files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from unet3d.data.synthetic import write_dataset

HERE = Path(__file__).resolve().parent
N_TRAINING, N_TEST = 12, 2
SHAPE_RANGE = (32, 40)
BACKGROUND = (-300.0, 300.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=HERE / "data", help="where to write the cases")
    args = parser.parse_args()
    kwargs = {"shape_range": SHAPE_RANGE, "background_range": BACKGROUND}
    write_dataset(args.output / "training", N_TRAINING, seed=3110, prefix="training", **kwargs)
    write_dataset(args.output / "test", N_TEST, seed=3111, prefix="test", with_labels=False, **kwargs)
    print(f"wrote {N_TRAINING} labelled and {N_TEST} unlabelled cases under {args.output}")


if __name__ == "__main__":
    main()

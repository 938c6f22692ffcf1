"""Write the synthetic BraTS-like cases that `brats_like_config.json` lists (4 modalities, labels 2 ⊃ 1 ⊃ 4).

Run from anywhere: `python examples/brats_like/make_data.py`. The data goes to `examples/brats_like/data/`;
the cases vary in shape (24-32 voxels per axis), voxel spacing and axis orientation, like real multi-site data.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from unet3d.data.synthetic import write_dataset

HERE = Path(__file__).resolve().parent
N_TRAINING, N_TEST = 15, 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=HERE / "data", help="where to write the cases")
    args = parser.parse_args()
    write_dataset(args.output, N_TRAINING, seed=2020, prefix="training")
    write_dataset(args.output, N_TEST, seed=2021, prefix="test", with_labels=False)
    print(f"wrote {N_TRAINING} labelled and {N_TEST} unlabelled cases to {args.output}")


if __name__ == "__main__":
    main()

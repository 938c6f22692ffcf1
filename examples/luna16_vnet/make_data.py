"""Write the synthetic chest CT volumes that `luna16_vnet_config.json` trains on, laid out like LUNA16: MetaImage
scans `subset0/<uid>.mhd` (+ `.raw`, Hounsfield units) and lung masks `seg-lungs-LUNA16/<uid>.mhd` (3 = left lung,
4 = right lung; the real masks also mark the trachea as 5).

Run from anywhere: `python examples/luna16_vnet/make_data.py [--output DIR]` (needs ITK: `pip install
'unet3d[itk]'`). It writes 17 scans, 15 of them with masks, to DIR (`examples/luna16_vnet/data/` by default). Every
scan has its own voxel spacing (in-plane 1.3-1.8 mm, 2.5-4 mm between slices) and shape, as CT series do. The same seed
always gives the same files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
N_SCANS, N_UNLABELLED = 17, 2
SEED = 16
FIELD_OF_VIEW_MM = (84.0, 72.0, 84.0)  # x (right to left), y (front to back), z (feet to head)


def scan(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float], tuple[float, ...]]:
    """A body (soft tissue) with two lungs (air-filled, with vessels), in air; returns (HU, mask, spacing, origin)."""
    in_plane = rng.uniform(1.3, 1.8)
    spacing = (in_plane, in_plane, rng.uniform(2.5, 4.0))
    shape = tuple(int(np.rint(f / s)) for f, s in zip(FIELD_OF_VIEW_MM, spacing, strict=True))
    x, y, z = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing, strict=True)], indexing="ij")
    centre = np.array(FIELD_OF_VIEW_MM) / 2 + rng.normal(0, 2, size=3)
    body = ((x - centre[0]) / 38) ** 2 + ((y - centre[1]) / 30) ** 2 < 1
    ct = np.where(body, 40.0, -1000.0)
    mask = np.zeros(shape, np.uint8)
    for label, side in ((3, 1), (4, -1)):  # LPS x grows to the patient's left
        radii = np.array([rng.uniform(11, 14), rng.uniform(15, 19), rng.uniform(28, 34)])
        lung_centre = centre + np.array([side * rng.uniform(14, 17), rng.uniform(-2, 2), rng.uniform(-4, 4)])
        inside = (((np.stack([x, y, z], -1) - lung_centre) / radii) ** 2).sum(-1) < 1
        mask[inside & body] = label
    vessels = rng.normal(0, 1, size=shape) > 2.2
    ct[mask > 0] = np.where(vessels[mask > 0], 50.0, -850.0)
    ct += rng.normal(0, 25, size=shape)
    origin = (*(float(v) for v in rng.uniform(-200, -150, size=2)), float(rng.uniform(-400, -300)))
    return ct.astype(np.int16), mask, spacing, origin


def write_mhd(itk, path: Path, array: np.ndarray, spacing: tuple[float, ...], origin: tuple[float, ...]) -> None:
    image = itk.image_from_array(np.ascontiguousarray(array.T))  # ITK arrays are indexed (z, y, x)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    itk.imwrite(image, str(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=HERE / "data", help="where to write the scans")
    args = parser.parse_args()
    try:
        import itk
    except ImportError:
        sys.exit("this example needs ITK to write MetaImage files: pip install 'unet3d[itk]'")
    rng = np.random.default_rng(SEED)
    for i in range(N_SCANS):
        uid = f"1.3.6.1.4.1.14519.5.2.1.{1000 + i}"
        ct, mask, spacing, origin = scan(rng)
        write_mhd(itk, args.output / "subset0" / f"{uid}.mhd", ct, spacing, origin)
        if i < N_SCANS - N_UNLABELLED:
            write_mhd(itk, args.output / "seg-lungs-LUNA16" / f"{uid}.mhd", mask, spacing, origin)
    print(f"wrote {N_SCANS} scans ({N_SCANS - N_UNLABELLED} with lung masks) under {args.output}")


if __name__ == "__main__":
    main()

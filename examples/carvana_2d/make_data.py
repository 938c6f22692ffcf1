"""Write the synthetic Carvana-like pictures that `carvana_2d_config.json` trains on: RGB JPEG photos of a car on a
textured background, with binary GIF masks, named as in the Carvana challenge (`imgs/<id>.jpg`, `masks/<id>_mask.gif`).

Run from anywhere: `python examples/carvana_2d/make_data.py [--output DIR]`. It writes 40 labelled pictures and 4
unlabelled ones (`test_*`), 96x64 pixels, to DIR (`examples/carvana_2d/data/` by default). The same seed always
gives the same files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = Path(__file__).resolve().parent
WIDTH, HEIGHT = 96, 64
N_LABELLED, N_TEST = 40, 4
SEED = 1918


def car_mask(rng: np.random.Generator) -> Image.Image:
    """A side view: a long body, a cabin on top and two wheels, at a random place and size."""
    mask = Image.new("L", (WIDTH, HEIGHT), 0)
    draw = ImageDraw.Draw(mask)
    length = rng.uniform(0.45, 0.75) * WIDTH
    height = length * rng.uniform(0.22, 0.3)
    x0 = rng.uniform(2, WIDTH - length - 2)
    y0 = rng.uniform(HEIGHT * 0.35, HEIGHT * 0.75 - height)
    draw.rounded_rectangle([x0, y0, x0 + length, y0 + height], radius=height / 3, fill=1)
    cabin = length * rng.uniform(0.4, 0.55)
    cx = x0 + length * rng.uniform(0.15, 0.3)
    draw.rounded_rectangle([cx, y0 - height * 0.8, cx + cabin, y0 + 1], radius=height / 3, fill=1)
    wheel = height * 0.45
    for wx in (x0 + length * 0.2, x0 + length * 0.8):
        draw.ellipse([wx - wheel, y0 + height - wheel, wx + wheel, y0 + height + wheel], fill=1)
    return mask


def photo(mask: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A car of a random colour with a dark window band, on a smooth, noisy studio background."""
    background = rng.uniform(120, 220, size=3) + rng.normal(0, 18, size=(HEIGHT, WIDTH, 3))
    background = np.asarray(
        Image.fromarray(np.clip(background, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(2))
    ).astype(np.float64)
    paint = rng.uniform(0, 255, size=3)
    car = paint + rng.normal(0, 12, size=(HEIGHT, WIDTH, 3))
    inside = np.asarray(mask, dtype=bool)
    rows = np.nonzero(inside.any(1))[0]
    window = np.zeros_like(inside)
    window[rows[0] : rows[0] + max(2, (rows[-1] - rows[0]) // 4)] = True
    car[window & inside] *= 0.35
    pixels = np.where(inside[..., None], car, background)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.6))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=HERE / "data", help="where to write the pictures")
    args = parser.parse_args()
    (args.output / "imgs").mkdir(parents=True, exist_ok=True)
    (args.output / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    names = [f"car_{i:03d}" for i in range(N_LABELLED)] + [f"test_{i:03d}" for i in range(N_TEST)]
    for name in names:
        mask = car_mask(rng)
        photo(mask, rng).save(args.output / "imgs" / f"{name}.jpg", quality=92)
        if not name.startswith("test_"):
            mask.save(args.output / "masks" / f"{name}_mask.gif")
    print(f"wrote {N_LABELLED} labelled and {N_TEST} unlabelled pictures under {args.output}")


if __name__ == "__main__":
    main()

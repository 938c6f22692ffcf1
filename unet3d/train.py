"""`python -m unet3d.train` runs `unet3d-train` (the form torchrun launches)."""

from unet3d.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())

"""`python -m unet3d.train`: the same as `python -m unet3d.cli.train` (`unet3d-train`), kept for the torchrun commands
and SLURM scripts that earlier versions wrote; new scripts launch `-m unet3d.cli.train`."""

from unet3d.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())

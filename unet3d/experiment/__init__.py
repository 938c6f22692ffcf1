"""Experiments: what `unet3d-train` runs.

`run.run_experiment` is the entry point: check, then train one model or every fold. `steps` runs one work dir as
restartable steps (train → predict → score → self-check); `folds` runs a cross-validation of such work dirs over the
`splits`, then writes the `summary`; `slurm` writes the scripts that run the folds in parallel on a cluster.
"""

"""The library entry point behind `unet3d-train`: load and validate an experiment, then train it, one model or
every fold of a cross-validation. Usable from Python exactly as from the command line.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from unet3d.atomic import check_writable
from unet3d.config.fields import parse_section
from unet3d.config.jsonfile import read_json
from unet3d.config.load import load_config
from unet3d.config.schema import MachineConfig
from unet3d.devices import device_type
from unet3d.errors import ConfigError
from unet3d.experiment.folds import CrossValidationResult, run_cross_validation, summarize_only, write_fold_configs
from unet3d.experiment.report import refresh_report
from unet3d.experiment.slurm import write_launch_scripts
from unet3d.experiment.steps import check_training_outputs, run_model
from unet3d.locking import check_not_busy, work_dir_lock
from unet3d.preflight import check_data, check_experiment
from unet3d.runtime import is_main_process
from unet3d.training.options import RunOptions
from unet3d.training.state import TrainingState
from unet3d.workdir import CrossValidationDir

log = logging.getLogger("unet3d")


@dataclass
class ExperimentResult:
    """The work dir and what ran: a single model's final state, or the cross-validation's per-fold outcome."""

    work_dir: Path
    state: TrainingState | None = None
    cross_validation: CrossValidationResult | None = None

    @property
    def failed(self) -> bool:
        return bool(self.cross_validation and self.cross_validation.failed)


def work_dir_for(config_path: Path, output_dir: Path | None) -> Path:
    """`<output_dir>/<config file name without .json>/` (`exp.v2.json` → `exp.v2/`, so versions never share a work
    dir); output_dir defaults to the config's folder."""
    config_path = Path(config_path).resolve()
    base = Path(output_dir).resolve() if output_dir is not None else config_path.parent
    name = config_path.name
    stem = name[: -len(".json")] if name.lower().endswith(".json") else config_path.stem
    return base / (stem if stem != name else f"{name}_run")


def read_machine_config(path: Path) -> MachineConfig:
    """3DUnetCNN's machine config, with its keys and types checked (every problem in one ConfigError, a line each
    naming the file and the key)."""
    data = read_json(Path(path))
    try:
        return parse_section(MachineConfig, data, "")
    except ConfigError as error:
        raise ConfigError("\n".join(f"{path}: {line}" for line in str(error).splitlines())) from None


def run_experiment(
    config_filename: str | Path,
    output_dir: str | Path | None = None,
    options: RunOptions | None = None,
    overrides: dict[str, Any] | None = None,
    folds: Sequence[int] | None = None,
    setup_crossval_only: bool = False,
    summary_only: bool = False,
) -> ExperimentResult:
    """Validate everything (config, then every data file), then train. Raises UserError subclasses for bad input."""
    options = options or RunOptions()
    config = load_config(config_filename, overrides)
    check_experiment(config)
    if not (setup_crossval_only or summary_only):
        device_type(config.training.device)  # an absent device is refused before the data are read
    work_dir = work_dir_for(Path(config_filename), Path(output_dir) if output_dir else None)
    if is_main_process():  # under torchrun the other ranks start training once rank 0 has checked the data
        if not summary_only:
            check_not_busy(work_dir, "cross-validation work dir" if config.cross_validation else "work dir")
            n_folds = config.cross_validation.n_folds if config.cross_validation else 0
            fold_dirs = [CrossValidationDir(work_dir).fold(k).path for k in range(1, n_folds + 1)]
            check_training_outputs(config, work_dir, fold_dirs)
        check_data(config, n_threads=max(2, options.n_workers))
    if is_main_process() and not summary_only:
        check_writable(work_dir)
    if config.cross_validation is None:
        if folds or setup_crossval_only or summary_only:
            raise ConfigError(
                "cross_validation: --fold, --setup_crossval_only and --summary need a cross_validation section"
            )
        state = run_model(config, work_dir, options).state
        if is_main_process():
            refresh_report(work_dir)
        return ExperimentResult(work_dir, state=state)
    if setup_crossval_only:
        with work_dir_lock(work_dir, "cross-validation work dir"):
            paths = write_fold_configs(config, work_dir, options.existing_fold_configs)
            sbatch, shell = write_launch_scripts(
                work_dir, len(paths), config.cluster, work_dir.name, config.training.device
            )
        log.info(
            "wrote %d fold configs to %s\n  on SLURM:  sbatch %s\n  elsewhere: bash %s [FOLD ...]\n"
            "  one fold:  unet3d-train --config_filename %s",
            len(paths),
            work_dir,
            sbatch,
            shell,
            paths[0],
        )
        return ExperimentResult(work_dir)
    if summary_only:
        return ExperimentResult(work_dir, cross_validation=summarize_only(config, work_dir))
    return ExperimentResult(work_dir, cross_validation=run_cross_validation(config, work_dir, options, folds))

"""The library entry point behind `unet3d-predict`: apply one model or an ensemble to new cases and write label
maps in each case's original space (and metrics when the cases have labels)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd
import torch

from unet3d import checkpoint as ckpt
from unet3d.atomic import check_writable
from unet3d.config.cases import Case, cases_from_input
from unet3d.config.fields import parse_section
from unet3d.config.load import load_config, parse_config
from unet3d.config.regions import declared_values
from unet3d.config.schema import Config, TrainingConfig
from unet3d.data.checks import check_cases
from unet3d.devices import device_type, n_devices_from
from unet3d.errors import CheckpointError, ConfigError, UserError
from unet3d.evaluation.metrics import METRICS_FILENAME, evaluate_directory
from unet3d.evaluation.postprocessing import keep_largest_component, read_decision
from unet3d.inference.loop import check_prediction_outputs, predict_cases
from unet3d.inference.predictor import make_predictor
from unet3d.locking import work_dir_lock
from unet3d.models import check_model_spec, spatial_dims
from unet3d.output_guard import Inputs
from unet3d.preflight import check_experiment
from unet3d.runtime import resolve_runtime
from unet3d.workdir import CrossValidationDir, RunDir, is_finished

log = logging.getLogger("unet3d")


@dataclass
class PredictionResult:
    """The label maps written, and the metrics table when the cases had labels."""

    paths: list[Path]
    metrics: pd.DataFrame | None = None


@dataclass(frozen=True)
class Member:
    """One model of an ensemble taken from a fold folder, and how far its training got."""

    path: Path
    epoch: int  # of the chosen checkpoint (the best epoch for model_best.pth)
    trained: int  # epochs completed in the fold
    n_epochs: int
    finished: bool

    def describe(self) -> str:
        return f"{self.path.parent.name} ({self.path.name}, epoch {self.epoch}; trained {self.trained}/{self.n_epochs})"


def fold_member(fold_dir: Path) -> Member:
    """The model a fold folder contributes, with its training progress (from its last checkpoint)."""
    run = RunDir(fold_dir)
    last = ckpt.read_checkpoint(run.last)
    training = parse_section(TrainingConfig, (last.config or {}).get("training") or {}, "training")
    chosen = run.model()
    epoch = ckpt.read_checkpoint(chosen).epoch if chosen != run.last else last.epoch
    return Member(chosen, epoch, last.epoch, training.n_epochs, is_finished(last, training))


def ensemble_members(model_dirs: Sequence[Path], allow_partial: bool = False) -> list[Path]:
    """The best model of each fold folder; a CV work dir stands for every fold its `fold{k}.json` files name. Missing
    or unfinished folds are refused (a CheckpointError naming them) unless `allow_partial`; the members are logged."""
    members: list[Member] = []
    problems: list[str] = []
    for folder in map(Path, model_dirs):
        if RunDir(folder).has_model():
            members.append(fold_member(folder))
            continue
        folds = CrossValidationDir(folder).folds()
        if not folds:
            raise CheckpointError(
                f"{folder}: neither a model folder (with {ckpt.LAST}) nor a CV work dir (with fold*/)"
            )
        for fold in folds:
            if not fold.has_model():
                problems.append(f"{fold.path}: no trained model")
            else:
                members.append(fold_member(fold.path))
    problems += [
        f"{m.path.parent}: not finished (epoch {m.trained} of {m.n_epochs})" for m in members if not m.finished
    ]
    if problems and not allow_partial:
        raise CheckpointError(
            "\n".join([*problems, "finish these folds (rerun unet3d-train) or predict with --allow_partial"])
        )
    for problem in problems:
        log.warning("--allow_partial: %s", problem)
    if members:
        log.info("ensemble of %d model(s): %s", len(members), "; ".join(m.describe() for m in members))
    return [m.path for m in members]


def config_for(models: Sequence[Path], config_filename: Path | None) -> Config:
    """The given config, or the one saved inside the first model's checkpoint (what it was trained with)."""
    if config_filename is not None:
        return load_config(config_filename)
    saved = ckpt.read_checkpoint(models[0]).config
    if saved is None:
        raise CheckpointError(f"{models[0]}: holds no config; give --config_filename")
    return parse_config(saved, base=Path(models[0]).parent, source=Path(models[0]))


def own_config(model: Path, saved: Config | None = None) -> tuple[Config, str] | None:
    """The config `model` was trained with and a description of it: the work dir's `config.json` beside it (what a
    fold or single run writes), else the one saved in the checkpoint (`saved`, when already read); None for a
    checkpoint that holds none or cannot be read (loading it for the prediction says why), and the guard then holds
    the cases of the config given."""
    beside = RunDir(Path(model).parent).config
    readers = [(lambda: load_config(beside), f"the model's config {beside}")] if beside.is_file() else []
    readers.append((lambda: saved or config_for([Path(model)], None), f"the config saved in the model {model}"))
    for read, what in readers:
        try:
            return read(), what
        except UserError:  # another tool's config.json beside the model; a checkpoint without a (valid) config
            continue
    return None


def models_inputs(models: Sequence[Path], config: Config, config_filename: Path | None) -> Inputs:
    """What no output of a command on `models` may replace (see `unet3d.output_guard`): the models, every case of
    each model's own config (the cases it was trained and validated on), and the config given with its cases.
    `config` is the config used: the one of `config_filename`, else the one saved in the first model."""
    inputs = Inputs()
    for index, model in enumerate(models):
        inputs.add(model, f"the model {model}")
        trained_with = own_config(model, config if index == 0 and config_filename is None else None)
        if trained_with is not None:
            inputs.add_config(*trained_with)
    if config_filename is not None:
        inputs.add(config_filename, f"the config {config_filename}").add_config(config, f"the config {config_filename}")
    return inputs


def select_cases(
    config: Config, group: str | None, input_path: Path | None, suffixes: Sequence[str] | None = None
) -> list[Case]:
    """The cases of `--group` (a `<group>_filenames` of the config) or of `--input`."""
    if (group is None) == (input_path is None):
        raise ConfigError("give exactly one of --group and --input")
    if input_path is not None:
        return cases_from_input(input_path, config, suffixes)
    return config.cases_of(group)


def predict(
    output_directory: Path,
    model_filenames: Sequence[Path] = (),
    model_dirs: Sequence[Path] = (),
    config_filename: Path | None = None,
    group: str | None = None,
    input_path: Path | None = None,
    modality_suffixes: Sequence[str] | None = None,
    activation: str | None = None,
    threshold: float = 0.5,
    tta: bool = False,
    n_devices: int | None = 1,
    n_workers: int = 0,
    sw_batch_size: int | None = None,
    stitch_on_cpu: bool = False,
    save_probabilities: bool = False,
    postprocessing: Path | None = None,
    use_postprocessing: bool = True,
    allow_partial: bool = False,
    device: str = "auto",
    n_gpus: int | None = None,
    overwrite: bool = False,
) -> PredictionResult:
    """Check the inputs, predict every case (averaging the models' probabilities), write label maps and metrics.

    Postprocessing: the `postprocessing.json` given, else the one a model folder (CV work dir) holds, unless
    `use_postprocessing` is False. Folds of `model_dirs` must be finished unless `allow_partial`. `device` as
    `unet3d.devices.device_type` reads it (not the models' training.device: they may have been trained elsewhere).
    `n_gpus` is the earlier name of `n_devices`, still accepted (a ConfigError when both disagree). No output may
    replace an input of the run (the cases, every case of the config and of each model's own config, the models and
    configs); existing files in a folder that no unet3d prediction wrote into are replaced only with `overwrite`
    (see `unet3d.output_guard`)."""
    n_devices = n_devices_from(n_devices, n_gpus, "predict")
    device_type(device)  # an absent device is refused before any work
    models = [*map(Path, model_filenames), *ensemble_members(model_dirs, allow_partial)]
    if not models:
        raise ConfigError("give --model_filename or --model_dirs")
    config = config_for(models, config_filename)
    check_experiment(config, train=False)
    cases = select_cases(config, group, input_path, modality_suffixes)
    inputs = models_inputs(models, config, config_filename)
    if postprocessing is not None:
        inputs.add(postprocessing, f"the postprocessing decision {postprocessing}")
    metrics_file = {Path(output_directory) / METRICS_FILENAME: "the metrics table"}
    check_prediction_outputs(Path(output_directory), cases, save_probabilities, inputs, metrics_file, overwrite)
    check_writable(Path(output_directory))
    labelled = all(case.label is not None for case in cases)
    infos = check_cases(
        {"input": cases},
        declared_values(config.labels),
        spatial_dims(config.model),
        labelled_groups=["input"] if labelled else [],
        n_threads=max(2, n_workers),
    )
    check_model_spec(config.model, in_channels=infos["input"][0].n_channels, out_channels=None)
    runtime = resolve_runtime(n_devices, n_workers, pin_memory=False, device=device)
    predictor = make_predictor(
        config,
        models,
        runtime.device,
        tta=tta,
        sw_batch_size=sw_batch_size,
        stitch_device=torch.device("cpu") if stitch_on_cpu else None,
        activation=activation,
    )
    log.info(
        "predicting %d cases with %d model(s)%s on %s",
        len(cases),
        len(models),
        " and mirror test-time augmentation" if tta else "",
        runtime.device,
    )
    output_directory = Path(output_directory)
    regions, names = config.regions, config.region_names
    postprocess = None
    found = (CrossValidationDir(d).postprocessing for d in model_dirs)
    decision = postprocessing or next((path for path in found if path.exists()), None)
    if use_postprocessing and decision is not None:
        chosen = read_decision(decision, names)
        log.info(
            "postprocessing from %s: largest connected component of %s",
            decision,
            [names[i] for i in chosen] or "no region",
        )
        if chosen:
            postprocess = partial(keep_largest_component, groups=regions, regions=chosen)
    with work_dir_lock(output_directory, "output folder"):
        paths = predict_cases(
            predictor, config, cases, output_directory, save_probabilities, threshold, postprocess=postprocess
        )
        metrics = None
        if labelled:
            metrics = evaluate_directory(output_directory, cases, regions, names)
    return PredictionResult(paths, metrics)

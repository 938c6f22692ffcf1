"""Cross-validation as numbered, restartable steps.

1. Split `training_filenames` into folds once (`splits.json`).
2. Write a self-contained config per fold (`fold{k}.json`: absolute paths, its training and held-out cases).
3. For each selected fold: skip it if finished, else train it in `fold{k}/` (resuming where it stopped), predict its
   held-out cases and every other non-training group with its best model, and score them. A failed fold is reported
   and the others still run.
4. When every fold has finished, write `cv_summary.csv`.
5. Then decide the postprocessing on all held-out predictions (`postprocessing.json`).
"""

from __future__ import annotations

import copy
import logging
import traceback
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unet3d.atomic import atomic_write_json
from unet3d.config.jsonfile import read_json
from unet3d.config.load import load_config
from unet3d.config.schema import Config
from unet3d.errors import Busy, ConfigError, MachineError, UserError, out_of_memory
from unet3d.evaluation.postprocessing import decide, write_decision
from unet3d.experiment.report import refresh_report
from unet3d.experiment.splits import load_or_make_inner_validation, load_or_make_splits
from unet3d.experiment.steps import predictions_done, run_model
from unet3d.experiment.summary import format_table, summarize, write_summary
from unet3d.inference.loop import prediction_path
from unet3d.locking import work_dir_lock
from unet3d.preflight import check_experiment
from unet3d.runtime import is_main_process
from unet3d.training.components import cache_settings
from unet3d.training.options import RunOptions
from unet3d.training.resume import Change, changes_to_accept, config_changes
from unet3d.workdir import HELD_OUT_GROUP, CrossValidationDir, RunDir, held_out_group

log = logging.getLogger("unet3d")


@dataclass
class CrossValidationResult:
    """What a cross-validation run did, fold by fold."""

    work_dir: Path
    trained: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    unfinished: list[int] = field(default_factory=list)  # folds not (yet) finished when the summary step ran
    summary_path: Path | None = None


def fold_config(
    raw: dict[str, Any],
    cases_by_id: dict[str, dict[str, Any]],
    held_out: Sequence[str],
    cache_dir: Path | None,
    inner: Sequence[str] = (),
) -> dict[str, Any]:
    """A fold's config: the experiment without `cross_validation`, with the fold's cases. The held-out cases are its
    `validation_filenames`, or with an inner validation split (`inner`) its `heldout_filenames`."""
    config = copy.deepcopy(raw)
    config.pop("cross_validation", None)
    excluded = set(held_out) | set(inner)
    config["training_filenames"] = [case for case_id, case in cases_by_id.items() if case_id not in excluded]
    if inner:
        config["validation_filenames"] = [cases_by_id[case_id] for case_id in inner]
        config[f"{HELD_OUT_GROUP}_filenames"] = [cases_by_id[case_id] for case_id in held_out]
    else:
        config["validation_filenames"] = [cases_by_id[case_id] for case_id in held_out]
    if cache_dir is not None:
        config.setdefault("dataset", {}).setdefault("cache_dir", str(cache_dir))
    return config


def write_fold_configs(config: Config, work_dir: Path, existing: str = "refuse") -> list[Path]:
    """Steps 1-2: `splits.json` and `fold{k}.json`, each written once. SLURM tasks and reruns train from the fold
    configs, so an existing fold config that differs from the experiment config (with its overrides) is refused with
    the differences (`existing` "refuse"), rewritten with them logged ("update"), or kept as it is ("keep")."""
    assert config.cross_validation is not None
    cv = config.cross_validation
    layout = CrossValidationDir(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    cases = config.groups["training"]
    held_out = load_or_make_splits(layout.splits, cases, cv.n_folds, cv.random_seed, cv.stratify)
    inner: list[list[str]] = [[] for _ in held_out]
    if cv.validation_fraction:
        inner = load_or_make_inner_validation(layout.splits, cases, held_out, cv.validation_fraction, cv.random_seed)
    if f"{HELD_OUT_GROUP}_filenames" in config.raw:
        raise ConfigError(f"{HELD_OUT_GROUP}_filenames: this group name is reserved for each fold's held-out cases")
    if config.groups.get("validation"):
        log.warning("validation_filenames is replaced in each fold by the fold's held-out cases")
    _, cache_root = cache_settings(config, work_dir)
    cases_by_id = {case.case_id: case.to_json() for case in cases}
    wanted = {
        layout.fold_config(k): fold_config(config.raw, cases_by_id, fold_ids, cache_root, inner[k - 1])
        for k, fold_ids in enumerate(held_out, start=1)
    }
    changed = {path: fold_config_changes(path, document) for path, document in wanted.items() if path.exists()}
    changed = {path: changes for path, changes in changed.items() if changes and existing != "keep"}
    if changed and existing != "update":
        raise ConfigError(
            "\n".join(
                [
                    f"{work_dir}: the fold configs are written once (SLURM tasks and reruns train from them), and the "
                    "experiment config with its overrides now differs from them:",
                    *(f"  {path.name}: {change}" for path, changes in changed.items() for change in changes),
                    "to keep the folds as they are, run with the config and --set overrides that wrote them; to write "
                    "them anew from this config: --update_fold_configs (a fold's run still refuses changes to what "
                    "its model learns or sees without --accept_config_changes)",
                ]
            )
        )
    for path, document in wanted.items():
        if not path.exists() or path in changed:
            atomic_write_json(path, document)
        for change in changed.get(path, []):
            log.warning("--update_fold_configs: %s: %s", path.name, change)
    log.info(
        "%d folds of %s held-out cases; split in %s",
        len(held_out),
        "/".join(str(len(f)) for f in held_out),
        layout.splits,
    )
    return list(wanted)


def fold_config_changes(path: Path, document: dict[str, Any]) -> list[Change]:
    """How `document` differs from the fold config in `path` (an unreadable file differs in everything)."""
    try:
        written = read_json(path)
    except ConfigError as error:
        raise ConfigError(f"{error}; remove it to write it anew from the experiment config") from None
    return config_changes(written, document)


def selected_folds(n_folds: int, folds: Sequence[int] | None) -> list[int]:
    """The 1-based folds to run: all by default; a ConfigError for folds that do not exist."""
    if not folds:
        return list(range(1, n_folds + 1))
    wrong = [k for k in folds if not 1 <= k <= n_folds]
    if wrong:
        raise ConfigError(f"--fold: {wrong} not in 1..{n_folds}")
    return sorted(set(folds))


def fold_done(config: Config, fold_dir: Path) -> bool:
    """A fold is done when its training is finished and its predictions are up to date."""
    return RunDir(fold_dir).is_finished(config.training) and predictions_done(config, fold_dir)


def _finished(config_path: Path, fold_dir: Path) -> bool:
    try:
        return fold_done(load_config(config_path), fold_dir)
    except UserError:
        return False


def run_cross_validation(
    config: Config, work_dir: Path, options: RunOptions, folds: Sequence[int] | None = None
) -> CrossValidationResult:
    """Steps 1-4 for the selected folds; returns which folds were trained, skipped or failed."""
    assert config.cross_validation is not None
    with work_dir_lock(work_dir, "cross-validation work dir") if is_main_process() else nullcontext():
        return _run_folds(config, work_dir, options, folds)


def _run_folds(
    config: Config, work_dir: Path, options: RunOptions, folds: Sequence[int] | None
) -> CrossValidationResult:
    paths = write_fold_configs(config, work_dir, options.existing_fold_configs)
    result = CrossValidationResult(work_dir)
    for k in selected_folds(len(paths), folds):
        fold_dir = CrossValidationDir(work_dir).fold(k).path
        try:
            fold = load_config(paths[k - 1])
            check_experiment(fold)
            changes_to_accept(fold, fold_dir, options.accept_config_changes)  # a changed fold is never skipped
            if fold_done(fold, fold_dir):
                log.info("fold %d: finished already, skipping", k)
                result.skipped.append(k)
                continue
            log.info("fold %d of %d", k, len(paths))
            run_model(fold, fold_dir, options)
            result.trained.append(k)
        except (UserError, Busy) as error:
            log.error("fold %d failed: %s", k, error)
            result.failed[k] = str(error)
        except MachineError:
            raise  # a full disk or a read-only folder stops every fold alike
        except Exception as error:  # one broken fold must not cost the others their run
            if out_of_memory(error):
                raise
            log.error("fold %d failed unexpectedly: %s\n%s", k, error, traceback.format_exc())
            result.failed[k] = f"{type(error).__name__}: {error}"
    if is_main_process():
        summarize_folds(paths, work_dir, result)
        if not result.unfinished:
            decide_postprocessing(paths, work_dir)
        if result.summary_path is not None:
            refresh_report(work_dir)
    return result


def decide_postprocessing(paths: Sequence[Path], work_dir: Path) -> Path:
    """Step 5: choose the largest-component filter per region on every fold's held-out predictions (kept when the
    folds' predictions have not changed since the last decision)."""
    layout = CrossValidationDir(work_dir)
    runs = [layout.fold(k) for k in range(1, len(paths) + 1)]
    sources = {run.name: run.read_manifest() for run in runs}
    target = layout.postprocessing
    if target.exists() and read_json(target).get("decided_on") == sources:
        return target
    pairs = []
    for run, path in zip(runs, paths, strict=True):
        fold = load_config(path)
        group = held_out_group(fold)
        pairs += [(prediction_path(run.group(group), case), case.label) for case in fold.groups[group]]
    decision = decide(pairs, fold.regions, fold.region_names)
    write_decision(work_dir, decision, sources)
    log.info(
        "postprocessing: largest connected component for %s (cross-validated mean Dice %.4f → %.4f); "
        "unet3d-predict applies it with these models",
        decision.regions or "no region",
        decision.dice_before,
        decision.dice_after,
    )
    return target


def summarize_folds(
    paths: Sequence[Path], work_dir: Path, result: CrossValidationResult, partial: bool = False
) -> None:
    """Step 4: write and print `cv_summary.csv` once every fold has finished, or with `partial` for the finished
    ones so far; the folds that are not finished are recorded in `result.unfinished`."""
    all_folds = list(range(1, len(paths) + 1))
    layout = CrossValidationDir(work_dir)
    unfinished = [k for k in all_folds if k in result.failed or not _finished(paths[k - 1], layout.fold(k).path)]
    result.unfinished = unfinished
    table, _ = summarize(work_dir, [k for k in all_folds if k not in unfinished])
    if unfinished and not partial:
        log.info(
            "folds %s are not finished; cv_summary.csv is written once all %d are (or now with --summary)",
            unfinished,
            len(all_folds),
        )
        return
    if table.empty:
        log.info("no fold has finished yet; nothing to summarize")
        return
    result.summary_path = write_summary(work_dir, table)
    missing = f"; folds {unfinished} are not finished and not included" if unfinished else ""
    log.info("cross-validation summary (%s)%s:\n%s", result.summary_path, missing, format_table(table))


def summarize_only(config: Config, work_dir: Path) -> CrossValidationResult:
    """`--summary`: write the summary of the finished folds now, training nothing, and name the missing folds. The
    fold configs are read as they are (training may be running from them)."""
    paths = write_fold_configs(config, work_dir, existing="keep")
    result = CrossValidationResult(work_dir)
    summarize_folds(paths, work_dir, result, partial=True)
    if result.summary_path is not None:
        refresh_report(work_dir)
    return result

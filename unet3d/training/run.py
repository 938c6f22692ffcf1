"""Train one model in one work dir: runtime, seed, saved config, optional warm start, example dump, then `fit`."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from unet3d import checkpoint as ckpt
from unet3d.atomic import remove_stale_temporaries
from unet3d.config.schema import Config
from unet3d.data.datasets import stop_workers
from unet3d.data.examples import write_examples
from unet3d.errors import Terminated
from unet3d.runtime import banner, broadcast_from_main, resolve_runtime, use_deterministic_algorithms
from unet3d.training.components import build_components
from unet3d.training.loop import FullValidation, fit
from unet3d.training.options import RunOptions
from unet3d.training.resume import changes_to_accept
from unet3d.training.selection import selection_for
from unet3d.training.state import TrainingState

log = logging.getLogger("unet3d")


@contextmanager
def quiet_log() -> Iterator[None]:
    """Only warnings and errors from the processes that do not write (ranks > 0 under torchrun)."""
    level = log.level
    log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        log.setLevel(level)


@contextmanager
def file_log(path: Path) -> Iterator[None]:
    """Copy the unet3d log (from INFO up) into `path` while the block runs, whatever the console shows."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    handler.setLevel(logging.INFO)
    level = log.level
    if log.getEffectiveLevel() > logging.INFO:  # used as a library without logging set up: the file still gets INFO
        log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()
        log.setLevel(level)


def choose_seed(config: Config, options: RunOptions, work_dir: Path) -> int:
    """--seed, else training.seed, else the seed of the run being resumed, else a fresh random one (logged)."""
    if options.seed is not None:
        return options.seed
    if config.training.seed is not None:
        return config.training.seed
    if (work_dir / ckpt.LAST).exists():
        return ckpt.read_checkpoint(work_dir / ckpt.LAST).seed
    return secrets.randbelow(2**31)


def train_model(
    config: Config, work_dir: Path, options: RunOptions, full_validation: FullValidation | None = None
) -> TrainingState:
    """Train (or resume, or extend) the model of `config` in `work_dir`. The config must have passed preflight.
    `full_validation` scores whole validation volumes during training (see `fit`)."""
    work_dir.mkdir(parents=True, exist_ok=True)
    runtime = resolve_runtime(
        options.n_devices,
        options.n_workers,
        options.pin_memory,
        options.thread_workers,
        config.training.device,
        options.dist_backend,
    )
    with file_log(work_dir / "train.log") if runtime.is_main else quiet_log():
        seed = broadcast_from_main(choose_seed(config, options, work_dir), runtime)
        use_deterministic_algorithms(config.training.deterministic)
        torch.manual_seed(seed)
        log.info(banner(runtime, seed))
        log.info("work dir: %s", work_dir)
        accepted = changes_to_accept(config, work_dir, options.accept_config_changes)
        if runtime.is_main:
            for stale in remove_stale_temporaries(work_dir):
                log.info("removed %s, left by an interrupted write", stale.name)
        components = build_components(config, work_dir, runtime)
        fresh = not (work_dir / ckpt.LAST).exists()
        if fresh and options.pretrained_model_filename is not None:
            loaded, skipped = ckpt.load_pretrained(components.model, options.pretrained_model_filename)
            log.info(
                "pretrained weights from %s: %d tensors loaded, %d skipped%s",
                options.pretrained_model_filename,
                len(loaded),
                len(skipped),
                f" ({', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''})" if skipped else "",
            )
        n_examples = options.n_examples if options.n_examples is not None else config.training.test_input
        if fresh and n_examples and runtime.is_main:
            folder = write_examples(
                components.train_dataset, work_dir / "data_loader_testing", n_examples, components.train_transform
            )
            log.info("wrote %d preprocessed input/target pairs to %s", n_examples, folder)
        log.info(
            "training %d cases, validating %d; batch size %d%s",
            len(config.groups["training"]),
            len(config.groups.get("validation", [])),
            config.training.batch_size,
            f" per process, {config.training.batch_size * runtime.world_size} in all (effective)"
            if runtime.distributed
            else "",
        )
        try:
            state = fit(config, components, work_dir, runtime, seed, full_validation, accepted)
        except (KeyboardInterrupt, Terminated) as stop:
            (log.warning if runtime.is_main else log.debug)(
                "%s during training; the run resumes from its last completed epoch when the same command runs again",
                "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted (Ctrl-C)",
            )
            raise
        finally:
            stop_workers(components.train_loader)
            stop_workers(components.val_loader)
        selection = selection_for(config.training.select_by, components.val_loader is not None)
        best = next((row for row in state.rows if row["epoch"] == state.best_epoch), {})
        value = best.get(selection.column, state.best_metric)
        why = "select_by last" if selection.select_by == "last" else f"{selection.column} {value:.4f}"
        log.info(
            "finished after epoch %d; best epoch %d (%s); results in %s", state.epoch, state.best_epoch, why, work_dir
        )
        return state

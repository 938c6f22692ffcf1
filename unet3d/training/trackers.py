"""The training log mirrored to an experiment tracker users already run: MLflow or Weights & Biases.

`training.tracker: "mlflow"` or `"wandb"` (needs `unet3d[mlflow]` or `unet3d[wandb]`), with `training.tracker_kwargs`
(MLflow: `tracking_uri`, `experiment_name`; W&B: `project`, `entity`, `group`, `mode`, `dir`). Each work dir (a fold,
or a single run) is one tracker run named after it, in an experiment (W&B: project) named after the config. Every log
row is sent as metrics at step = epoch, with the TensorBoard tags (`loss/train`, `dice/val_<region>`, ...; MLflow
writes a region's '+' as '_'); the effective config goes with the run (MLflow: parameters and a `config.json`
artifact; W&B: the run's config); the fold's final full-volume metrics are added when its held-out cases are scored
(`final/...`). Rank 0 alone writes.

`<work dir>/tracker.json` records which run mirrors the work dir and its last epoch, so a resumed process continues
that run with the epochs it lacks: every checkpointed epoch appears once. A tracker run holding epochs the
checkpoint does not (a checkpoint replaced by an older one) is not continued: MLflow's is deleted and rebuilt, W&B's
(which cannot be rewritten) is left and a new run replays the log, with a warning naming it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from unet3d.atomic import atomic_write_json
from unet3d.config.schema import TrainingConfig
from unet3d.training.tensorboard import scalars, tensorboard_mirror

log = logging.getLogger("unet3d")
STATE_FILENAME = "tracker.json"
Row = dict[str, Any]


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Dotted keys → values as text, without the case lists (`*_filenames`): the config as tracker parameters."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        if key.endswith("_filenames") or key == "planned":
            continue
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value)[:500]
    return flat


def mlflow_key(tag: str) -> str:
    """A tag as MLflow accepts it: region names join label values with '+', which MLflow refuses ('2+1+4' → '2_1_4')."""
    return tag.replace("+", "_")


class MlflowRun:
    """One MLflow run through the tracking client (no global state: several folds may log from one process)."""

    def __init__(self, kwargs: dict[str, Any], experiment: str, name: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=kwargs.get("tracking_uri"))
        name_of_experiment = kwargs.get("experiment_name", experiment)
        found = self.client.get_experiment_by_name(name_of_experiment)
        self.experiment_id = (
            found.experiment_id if found is not None else self.client.create_experiment(name_of_experiment)
        )
        self.name, self.run_id = name, ""

    def open(self, run_id: str | None, config: dict[str, Any]) -> str:
        if run_id is None:
            self.run_id = self.client.create_run(self.experiment_id, run_name=self.name).info.run_id
            from mlflow.entities import Param

            params = [Param(k, v) for k, v in flatten(config).items()]
            for start in range(0, len(params), 100):
                self.client.log_batch(self.run_id, params=params[start : start + 100])
        else:
            if self.client.get_run(run_id).info.lifecycle_stage != "active":  # raises when the store lost it
                raise LookupError(f"MLflow run {run_id} was deleted")
            self.run_id = run_id
            self.client.update_run(run_id, status="RUNNING")
        self.client.log_text(self.run_id, json.dumps(config, indent=2), "config.json")
        return self.run_id

    def discard(self, run_id: str) -> None:
        self.client.delete_run(run_id)

    def log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(mlflow_key(k), v, now, step) for k, v in values.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def summarize(self, values: dict[str, float], step: int) -> None:
        self.log(values, step)

    def close(self) -> None:
        if self.run_id:
            self.client.set_terminated(self.run_id)


class WandbRun:
    """One Weights & Biases run (online, or offline with `mode: "offline"` / WANDB_MODE=offline)."""

    def __init__(self, kwargs: dict[str, Any], experiment: str, name: str, work_dir: Path) -> None:
        self.kwargs, self.experiment, self.name, self.work_dir = kwargs, experiment, name, work_dir
        self.run: Any = None

    def open(self, run_id: str | None, config: dict[str, Any]) -> str:
        import wandb

        self.run = wandb.init(
            project=self.kwargs.get("project", self.experiment),
            entity=self.kwargs.get("entity"),
            group=self.kwargs.get("group", self.experiment),
            name=self.name,
            id=run_id,
            resume="allow" if run_id else None,
            mode=self.kwargs.get("mode"),
            dir=str(self.kwargs.get("dir", self.work_dir)),
            config=config,
            reinit="create_new",
        )
        return str(self.run.id)

    def discard(self, run_id: str) -> None:
        log.warning("W&B run %s holds epochs the checkpoint does not; a new run replays the log", run_id)

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def summarize(self, values: dict[str, float], step: int) -> None:
        self.run.summary.update(values)  # a W&B step cannot be revisited; the summary holds a run's final numbers

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()


def _open(name: str, kwargs: dict[str, Any], work_dir: Path) -> MlflowRun | WandbRun:
    experiment = work_dir.parent.name if work_dir.name.startswith("fold") else work_dir.name
    if name == "mlflow":
        return MlflowRun(kwargs, experiment, work_dir.name)
    return WandbRun(kwargs, experiment, work_dir.name, work_dir)


def _state(work_dir: Path) -> dict[str, Any]:
    """`tracker.json`: {tracker, run_id, epochs}; one that does not read as such (edited, truncated) is a warning and
    is taken as absent, so a new tracker run replays the log."""
    path = work_dir / STATE_FILENAME
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text())
        if isinstance(state.get("tracker"), str) and isinstance(state.get("run_id"), str):
            return {**state, "epochs": int(state.get("epochs", 0))}
        problem = "not {tracker, run_id, epochs}"
    except (OSError, UnicodeDecodeError, ValueError, TypeError, AttributeError) as error:
        problem = f"{type(error).__name__}: {error}"
    log.warning("%s: unreadable (%s); a new tracker run replays the log", path, problem)
    return {}


class TrackerSession:
    """The work dir's tracker run for one process: a tracker never blocks training, so any failure of the tracker
    (an unreachable server, a deleted run, a store that does not open) is one warning, and the run goes on without it;
    a run that cannot be continued is replaced by a new one that replays the log."""

    def __init__(self, tracker: str, kwargs: dict[str, Any], work_dir: Path) -> None:
        self.tracker, self.kwargs, self.work_dir = tracker, kwargs, work_dir
        self.run: MlflowRun | WandbRun | None = None
        self.run_id = ""

    def _failed(self, what: str, error: Exception) -> None:
        log.warning(
            "training.tracker %s: %s failed (%s: %s); training goes on without the tracker",
            self.tracker,
            what,
            type(error).__name__,
            error,
        )
        self.run = None

    def start(
        self, run_id: str | None, config: dict[str, Any], discard: str | None = None, replace_gone: bool = True
    ) -> bool:
        """Open the tracker run `run_id` (a new one when None, or, with `replace_gone`, when it cannot be continued),
        after discarding the run `discard`; returns whether `run_id` itself was continued."""
        try:
            self.run = _open(self.tracker, self.kwargs, self.work_dir)
            if discard:
                self.run.discard(discard)
        except Exception as error:
            self._failed("connecting", error)
            return False
        if run_id is not None:
            try:
                self.run_id = self.run.open(run_id, config)
                return True
            except Exception as error:
                if not replace_gone:
                    self._failed(f"continuing run {run_id}", error)
                    return False
                log.warning(
                    "training.tracker %s: run %s cannot be continued (%s: %s); a new run replays the log",
                    self.tracker,
                    run_id,
                    type(error).__name__,
                    error,
                )
        try:
            self.run_id = self.run.open(None, config)
        except Exception as error:
            self._failed("starting a run", error)
        return False

    def call(self, what: str, action: Callable[[MlflowRun | WandbRun], None]) -> None:
        """`action(run)`, unless the tracker failed before; a failure disables it (with one warning)."""
        if self.run is None:
            return
        try:
            action(self.run)
        except Exception as error:
            self._failed(what, error)

    def close(self) -> None:
        self.call("closing the run", lambda run: run.close())


@contextmanager
def tracker_mirror(
    work_dir: Path, rows: list[Row], tracker: str | None, kwargs: dict[str, Any], config: dict[str, Any], enabled: bool
) -> Iterator[Callable[[Row], None]]:
    """Continue (or start) the work dir's tracker run with the checkpoint's rows it lacks, and yield a function that
    sends one more row; a no-op unless `tracker` is set and `enabled` (rank 0). See `TrackerSession`."""
    if tracker is None or not enabled:
        yield lambda row: None
        return
    session = TrackerSession(tracker, kwargs, work_dir)
    state, last = _state(work_dir), int(rows[-1]["epoch"]) if rows else 0
    same = state.get("tracker") == tracker and bool(state.get("run_id"))
    resumable = same and state["epochs"] <= last
    continued = session.start(
        state["run_id"] if resumable else None, config, state["run_id"] if same and not resumable else None
    )
    done = state["epochs"] if continued else 0

    def add(row: Row) -> None:
        session.call("logging", lambda run: run.log(scalars(row), int(row["epoch"])))
        if session.run is not None:
            atomic_write_json(
                work_dir / STATE_FILENAME, {"tracker": tracker, "run_id": session.run_id, "epochs": int(row["epoch"])}
            )

    try:
        for row in rows:
            if int(row["epoch"]) > done:
                add(row)
        if not rows and session.run is not None:
            atomic_write_json(work_dir / STATE_FILENAME, {"tracker": tracker, "run_id": session.run_id, "epochs": 0})
        yield add
    finally:
        session.close()


def log_final_metrics(work_dir: Path, tracker: str | None, kwargs: dict[str, Any], metrics: dict[str, float]) -> None:
    """Add a finished run's full-volume metrics (`final/dice_<region>`, ...) to its tracker run, at its last epoch
    (a tracker that fails is a warning: the run is finished)."""
    state = _state(work_dir)
    if tracker is None or not metrics or state.get("tracker") != tracker:
        return
    session = TrackerSession(tracker, kwargs, work_dir)
    config_path = work_dir / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    if session.start(state["run_id"], config, replace_gone=False):
        final = {f"final/{k}": float(v) for k, v in metrics.items()}
        session.call("sending the final metrics", lambda run: run.summarize(final, state["epochs"]))
        session.close()


@contextmanager
def log_mirrors(
    work_dir: Path, rows: list[Row], training: TrainingConfig, config: dict[str, Any], is_main: bool
) -> Iterator[Callable[[Row], None]]:
    """Every mirror of the training log the config asks for (TensorBoard, a tracker), as one function of a row."""
    with ExitStack() as stack:
        mirrors = [
            stack.enter_context(tensorboard_mirror(work_dir, rows, training.tensorboard and is_main)),
            stack.enter_context(
                tracker_mirror(work_dir, rows, training.tracker, training.tracker_kwargs, config, is_main)
            ),
        ]

        def add(row: Row) -> None:
            for mirror in mirrors:
                mirror(row)

        yield add

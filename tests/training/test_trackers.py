"""The training log mirrored to MLflow and Weights & Biases (unet3d/training/trackers.py), read back offline."""

import glob
import importlib.util
import json
import os
import re
import struct
import subprocess
import sys

import pandas as pd
import pytest

from unet3d.config.schema import TrainingConfig
from unet3d.errors import ConfigError
from unet3d.experiment.run import run_experiment
from unet3d.preflight import check_tracker
from unet3d.training.history import LOG_FILENAME
from unet3d.training.options import RunOptions
from unet3d.training.trackers import STATE_FILENAME, flatten, mlflow_key


def with_tracker(tracker, kwargs):
    def mutate(config):
        config["training"].update(tracker=tracker, tracker_kwargs=kwargs)

    return mutate


def run_twice(experiment, tmp_path, tracker, kwargs):
    """Train 2 epochs, then extend the finished run to 3: the tracker must show each epoch once."""
    config = experiment(f"tracked_{tracker}", n_validation=1, n_epochs=2, mutate=with_tracker(tracker, kwargs))
    run_experiment(config, tmp_path, RunOptions(seed=1))
    result = run_experiment(config, tmp_path, RunOptions(seed=1), overrides={"training.n_epochs": 3})
    return config, result.work_dir


@pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="the mlflow extra is not installed")
def test_mlflow_holds_every_epoch_once_after_a_resume_and_the_final_metrics(experiment, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    # MLflow's local store as `pip install 'unet3d[mlflow]'` installs it: SQLite (its file store is refused since 3.x).
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    monkeypatch.chdir(tmp_path)  # MLflow puts artifacts in ./mlruns beside a SQLite store
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config, work = run_twice(experiment, tmp_path, "mlflow", {"tracking_uri": uri, "experiment_name": "tiny"})
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert [r.info.run_name for r in runs] == [work.name]
    run = runs[0]
    log = pd.read_csv(work / LOG_FILENAME)
    history = client.get_metric_history(run.info.run_id, "loss/train")
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx(list(log["loss"]), rel=1e-5)
    region = [m.value for m in client.get_metric_history(run.info.run_id, mlflow_key("dice/val_2+1+4"))]
    assert region == pytest.approx(list(log["val_dice_2+1+4"]), rel=1e-5)
    metrics = pd.read_csv(work / "validation" / "metrics.csv", dtype={"case_id": str}).set_index("case_id")
    assert run.data.metrics["final/dice_4"] == pytest.approx(metrics.loc["mean", "dice_4"])
    assert run.data.params["training.batch_size"] == "2" and run.info.status == "FINISHED"
    assert json.loads((work / STATE_FILENAME).read_text())["epochs"] == 3
    # A tracker run ahead of the checkpoint (here: said to hold 9 epochs) is deleted and rebuilt from the log.
    state = json.loads((work / STATE_FILENAME).read_text())
    (work / STATE_FILENAME).write_text(json.dumps({**state, "epochs": 9}))
    run_experiment(config, tmp_path, RunOptions(seed=1), overrides={"training.n_epochs": 4})
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert len(runs) == 1 and runs[0].info.run_id != run.info.run_id
    assert [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss/train")] == [1, 2, 3, 4]


needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="the mlflow extra is missing")


@needs_mlflow
def test_a_deleted_mlflow_run_is_replaced_and_a_changed_store_is_applied(experiment, tmp_path, monkeypatch, caplog):
    # Issue 22, item 5: a deleted run, or a changed tracking_uri, made every resume a traceback.
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    first = f"sqlite:///{tmp_path / 'first.db'}"
    config, work = run_twice(experiment, tmp_path, "mlflow", {"tracking_uri": first, "experiment_name": "tiny"})
    client = MlflowClient(tracking_uri=first)
    client.delete_run(json.loads((work / STATE_FILENAME).read_text())["run_id"])
    run_experiment(config, tmp_path, RunOptions(seed=1), overrides={"training.n_epochs": 4})
    assert "cannot be continued" in caplog.text and "a new run replays the log" in caplog.text
    (active,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert [m.step for m in client.get_metric_history(active.info.run_id, "loss/train")] == [1, 2, 3, 4]
    second = f"sqlite:///{tmp_path / 'second.db'}"
    raw = json.loads(config.read_text())
    raw["training"]["tracker_kwargs"]["tracking_uri"] = second  # applied on resume, without asking
    config.write_text(json.dumps(raw))
    state = run_experiment(config, tmp_path, RunOptions(seed=1), overrides={"training.n_epochs": 5}).state
    assert state.epoch == 5
    moved = MlflowClient(tracking_uri=second)
    (run,) = moved.search_runs([moved.get_experiment_by_name("tiny").experiment_id])
    assert [m.step for m in moved.get_metric_history(run.info.run_id, "loss/train")] == [1, 2, 3, 4, 5]


@needs_mlflow
def test_unet3d_train_resumes_after_its_mlflow_run_was_deleted_in_the_default_store(experiment, tmp_path):
    # Issue 22, item 5, as a user meets it: MLflow as `unet3d[mlflow]` installs it, no tracking_uri (MLflow's default
    # store: SQLite in the working directory, no MLFLOW_ALLOW_FILE_STORE), the run deleted between two invocations.
    from mlflow.tracking import MlflowClient

    config = experiment("deleted", n_validation=1, n_epochs=1, mutate=with_tracker("mlflow", {"experiment_name": "x"}))
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}

    def train(*flags):
        command = ["--config_filename", str(config), "--output_dir", str(tmp_path / "out"), "--seed", "1", *flags]
        done = subprocess.run(
            [sys.executable, "-m", "unet3d.cli.train", *command], capture_output=True, text=True, cwd=tmp_path, env=env
        )
        assert done.returncode == 0, done.stderr
        return done.stderr

    assert "training goes on without the tracker" not in train()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    work = tmp_path / "out" / "deleted"
    client.delete_run(json.loads((work / STATE_FILENAME).read_text())["run_id"])
    stderr = train("--set", "training.n_epochs=2")
    assert "cannot be continued" in stderr and "a new run replays the log" in (work / "train.log").read_text()
    assert pd.read_csv(work / LOG_FILENAME)["epoch"].tolist() == [1, 2]
    (run,) = client.search_runs([client.get_experiment_by_name("x").experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss/train")] == [1, 2]


@needs_mlflow
@pytest.mark.parametrize("text", ['{"tracker": "mlflow", "run_', '["mlflow"]'])
def test_an_unreadable_tracker_state_is_a_warning_and_a_new_run(experiment, tmp_path, monkeypatch, caplog, text):
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = experiment("unreadable", n_epochs=1, mutate=with_tracker("mlflow", {"tracking_uri": uri}))
    work = run_experiment(config, tmp_path, RunOptions(seed=1)).work_dir
    (work / STATE_FILENAME).write_text(text)  # edited or truncated by hand
    state = run_experiment(config, tmp_path, RunOptions(seed=1), overrides={"training.n_epochs": 2}).state
    assert state.epoch == 2 and "tracker.json: unreadable" in caplog.text
    run_id = json.loads((work / STATE_FILENAME).read_text())["run_id"]
    client = MlflowClient(tracking_uri=uri)
    assert [m.step for m in client.get_metric_history(run_id, "loss/train")] == [1, 2]


@needs_mlflow
def test_an_unreachable_tracker_never_blocks_training(experiment, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    kwargs = {"tracking_uri": "http://127.0.0.1:9"}  # the discard port: nothing answers
    config = experiment("unreachable", n_epochs=2, mutate=with_tracker("mlflow", kwargs))
    state = run_experiment(config, tmp_path, RunOptions(seed=1)).state
    assert state.epoch == 2
    assert caplog.text.count("training goes on without the tracker") == 1


@pytest.mark.parametrize(
    ("tracker", "kwargs", "message"),
    [
        ("mlflow", {"tracking_uri": 123}, "training.tracker_kwargs.tracking_uri: expected a non-empty string, got 123"),
        ("wandb", {"mode": "bogus"}, "training.tracker_kwargs.mode: expected one of ['online', 'offline', 'disabled'"),
    ],
)
def test_bad_tracker_settings_are_one_line_before_any_compute(tracker, kwargs, message):
    if importlib.util.find_spec(tracker) is None:
        pytest.skip(f"the {tracker} extra is not installed")
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_tracker(TrainingConfig(tracker=tracker, tracker_kwargs=kwargs))


def wandb_records(folder):
    """History rows (step → values) and summary updates from W&B's offline run files (LevelDB-style log records of
    protobuf messages), every offline run directory of the run in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    history, summary = [], {}
    for path in sorted(glob.glob(str(folder / "wandb" / "offline-run-*" / "run-*.wandb"))):
        data, position, pending = open(path, "rb").read(), 7, b""
        while position + 7 <= len(data):
            left = 32768 - position % 32768
            if left < 7:
                position += left
                continue
            _, length, kind = struct.unpack("<IHB", data[position : position + 7])
            if length == 0 and kind == 0:
                position += left
                continue
            fragment, position = data[position + 7 : position + 7 + length], position + 7 + length
            pending = fragment if kind in (1, 2) else pending + fragment
            if kind not in (1, 4):
                continue
            record = pb.Record()
            record.ParseFromString(pending)
            name = record.WhichOneof("record_type")
            if name == "history":
                history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
            elif name == "summary":
                summary.update(
                    {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update}
                )
    return history, summary


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None, reason="the wandb extra is not installed")
def test_wandb_offline_holds_every_epoch_once_after_a_resume(experiment, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    _, work = run_twice(experiment, tmp_path, "wandb", {"mode": "offline", "dir": str(tmp_path / "wb")})
    history, summary = wandb_records(tmp_path / "wb")
    log = pd.read_csv(work / LOG_FILENAME)
    assert [row["_step"] for row in history] == [1, 2, 3]
    assert [row["loss/train"] for row in history] == pytest.approx(list(log["loss"]), rel=1e-5)
    assert [row["dice/val_2+1+4"] for row in history] == pytest.approx(list(log["val_dice_2+1+4"]), rel=1e-5)
    metrics = pd.read_csv(work / "validation" / "metrics.csv", dtype={"case_id": str}).set_index("case_id")
    assert summary["final/dice_4"] == pytest.approx(metrics.loc["mean", "dice_4"])


def test_a_missing_package_or_setting_is_a_config_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "mlflow" else real(name))
    with pytest.raises(ConfigError, match=r"training.tracker: 'mlflow' needs the mlflow package; pip install"):
        check_tracker(TrainingConfig(tracker="mlflow"))
    monkeypatch.undo()
    if importlib.util.find_spec("wandb") is not None:
        with pytest.raises(ConfigError, match=r"training.tracker_kwargs: \['tracking_uri'\] are not wandb settings"):
            check_tracker(TrainingConfig(tracker="wandb", tracker_kwargs={"tracking_uri": "x"}))


def test_parameters_are_the_config_without_its_case_lists():
    flat = flatten({"model": {"name": "UNet", "channels": [4, 8]}, "training_filenames": [{"image": "a"}]})
    assert flat == {"model.name": '"UNet"', "model.channels": "[4, 8]"}

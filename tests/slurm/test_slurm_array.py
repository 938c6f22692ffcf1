"""The README's cluster path on a real SLURM (slurmctld and slurmd of Debian's slurm-wlm, one node of 2 CPUs): the
array written by --setup_crossval_only completes every fold, survives a requeue in the middle of an epoch and the
time-limit signal, refuses a fold submitted twice, and trains a fold on two `srun` tasks (issue 23)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import tiny_config
from unet3d import checkpoint as ckpt
from unet3d.training.history import LOG_FILENAME

# One worker of pytest-xdist runs them all, so one cluster starts.
pytestmark = pytest.mark.xdist_group("slurm")

CLUSTER = {"cpus": 1, "mem": "1G", "time": 10}  # gpus left at its default: sinfo lists no GPU here


@pytest.fixture
def experiment_on(tiny_data, tmp_path):
    """experiment_on(name, n_epochs, **cluster) → (config path, CV work dir) of a 3-fold experiment, set up for the
    array with `--setup_crossval_only`."""
    folder, entries = tiny_data

    def setup(name: str, n_epochs: int, **cluster) -> tuple[Path, Path]:
        config = tiny_config(entries, n_validation=0, n_epochs=n_epochs, batch_size=1)
        config["cross_validation"] = {"n_folds": 3, "random_seed": 1}
        config["cluster"] = {**CLUSTER, **cluster}
        path = folder / f"{name}.json"
        path.write_text(json.dumps(config))
        return path, tmp_path / name

    return setup


def train(cluster, config: Path, work: Path, *args: str) -> subprocess.CompletedProcess:
    """`unet3d-train` on the submitting machine (it sees the cluster through SLURM_CONF, as on a login node)."""
    command = [sys.executable, "-m", "unet3d.cli.train", "--config_filename", str(config)]
    command += ["--output_dir", str(work.parent), *args]
    return subprocess.run(command, env=cluster.env, capture_output=True, text=True, timeout=300)


def set_up(cluster, config: Path, work: Path) -> Path:
    result = train(cluster, config, work, "--setup_crossval_only")
    assert result.returncode == 0, result.stderr
    return work / "submit_folds.sbatch"


def outputs(work: Path, fold: int) -> str:
    """Everything the fold's array tasks printed (one file per array job; a requeue appends to it)."""
    return "".join(path.read_text() for path in sorted((work / "slurm_logs").glob(f"fold{fold}_*.out")))


def epochs(fold_dir: Path) -> list[int]:
    return list(pd.read_csv(fold_dir / LOG_FILENAME)["epoch"]) if (fold_dir / LOG_FILENAME).exists() else []


def wait_for_epochs(fold_dir: Path, n: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while len(epochs(fold_dir)) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{fold_dir} did not reach epoch {n}")
        time.sleep(0.2)


def states(tasks: dict[str, dict[str, str]]) -> dict[str, str]:
    return {k: task["JobState"] for k, task in tasks.items()}


def test_the_readme_path_trains_every_fold_and_a_resubmission_skips_them(cluster, experiment_on):
    config, work = experiment_on("readme", 2)
    script = set_up(cluster, config, work)
    assert "--gres" not in script.read_text(), "a CPU cluster refuses a GPU request"
    tasks = cluster.wait(cluster.submit(str(script)))
    assert states(tasks) == {"1": "COMPLETED", "2": "COMPLETED", "3": "COMPLETED"}, outputs(work, 1)
    summary = train(cluster, config, work, "--summary")
    assert summary.returncode == 0, summary.stderr
    assert (work / "cv_summary.csv").exists() and "are not finished" not in summary.stderr
    again = cluster.wait(cluster.submit(str(script)))
    assert set(states(again).values()) == {"COMPLETED"}
    for k in (1, 2, 3):
        assert epochs(work / f"fold{k}") == [1, 2]
        assert outputs(work, k).count(f"fold {k}: exit status 0") == 2


def test_a_requeue_in_the_middle_of_an_epoch_resumes_with_every_epoch_once(cluster, experiment_on):
    config, work = experiment_on("requeue", 24)  # enough left after epoch 2 on a fast machine
    script = set_up(cluster, config, work)
    job = cluster.submit("--array=1", str(script))
    wait_for_epochs(work / "fold1", 2)
    time.sleep(0.3)  # into the next epoch
    cluster.run("scontrol", "requeue", f"{job}_1")
    # Start the requeued task only once the first attempt has ended: a start forced while slurmd still tears down
    # the attempt it interrupted failed the new one under load (its script never ran: JobState FAILED).
    deadline = time.monotonic() + 120
    while "fold 1: exit status 143" not in outputs(work, 1) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)
    cluster.start_when_requeued(f"{job}_1")
    tasks = cluster.wait(job)
    assert states(tasks) == {"1": "COMPLETED"}, f"{tasks}\n{outputs(work, 1)}"
    assert int(tasks["1"]["Restarts"]) == 1
    assert epochs(work / "fold1") == list(range(1, 25))
    printed = outputs(work, 1)
    assert printed.count("fold 1: starts on") == 2, "the requeued attempt appends to the output file"
    assert "fold 1: exit status 143" in printed and "fold 1: exit status 0" in printed
    assert "terminated (SIGTERM) during training" in (work / "fold1" / "train.log").read_text()


def test_the_time_limit_signal_requeues_the_task_which_resumes(cluster, experiment_on):
    # At `--signal=B:USR1@N` SLURM sends USR1 to the batch shell N seconds before the time limit; here it is sent
    # at once with scancel, as SLURM would, instead of waiting minutes for a real limit.
    config, work = experiment_on("timelimit", 24)
    script = set_up(cluster, config, work)
    assert "#SBATCH --signal=B:USR1@300" in script.read_text()
    job = cluster.submit("--array=2", str(script))
    wait_for_epochs(work / "fold2", 2)
    cluster.run("scancel", "--batch", "--signal=USR1", f"{job}_2")
    cluster.start_when_requeued(f"{job}_2")
    tasks = cluster.wait(job)
    assert states(tasks) == {"2": "COMPLETED"} and int(tasks["2"]["Restarts"]) == 1, outputs(work, 2)
    assert "fold 2: time limit near, requeueing to resume later" in outputs(work, 2)
    assert epochs(work / "fold2") == list(range(1, 25))


def test_the_same_fold_submitted_twice_runs_once(cluster, experiment_on):
    config, work = experiment_on("twice", 24)
    script = set_up(cluster, config, work)
    first = cluster.submit("--array=3", str(script))
    wait_for_epochs(work / "fold3", 1)  # the first task holds the fold
    second = cluster.submit("--array=3", str(script))
    refused = cluster.wait(second)["3"]
    assert refused["JobState"] == "FAILED" and refused["ExitCode"] == "75:0"
    assert "in use by another unet3d run" in outputs(work, 3)
    assert states(cluster.wait(first)) == {"3": "COMPLETED"}
    assert epochs(work / "fold3") == list(range(1, 25))


def test_a_fold_trains_on_two_srun_tasks_with_a_rendezvous(cluster, experiment_on):
    # The script asks for 2 nodes; this cluster has one, so both tasks run on it (sbatch's command line wins).
    config, work = experiment_on("twonodes", 2, nodes=2, requeue_on_timeout=False)
    script = set_up(cluster, config, work)
    assert "srun " in script.read_text()
    job = cluster.submit("--nodes=1", "--ntasks-per-node=2", "--array=1", str(script))
    assert states(cluster.wait(job)) == {"1": "COMPLETED"}, outputs(work, 1)
    assert "x2 processes (DistributedDataParallel)" in (work / "fold1" / "train.log").read_text()
    assert epochs(work / "fold1") == [1, 2]
    assert ckpt.load_checkpoint(work / "fold1" / "model.pth")["epoch"] == 2

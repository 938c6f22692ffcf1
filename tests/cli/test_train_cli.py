"""`unet3d-train` as a user runs it: a subprocess, its exit code, its messages, its files; cross-validation from
the command line (failed folds, SLURM set-up), and 3DUnetCNN's own example configs."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from tests.conftest import run_cli, tiny_config, with_cv
from unet3d import checkpoint as ckpt
from unet3d.data.synthetic import write_case, write_dataset
from unet3d.experiment.run import run_experiment
from unet3d.training.history import LOG_FILENAME
from unet3d.training.options import RunOptions

# 3DUnetCNN's own example configs run unchanged, with only their file lists and sizes pointed at synthetic data. The
# fixtures live in ../shared/fixtures/3dunetcnn beside a development checkout; a user's clone has no such folder, so
# these tests skip there (the same schema is exercised by every other test through tests/conftest.py).
FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "3dunetcnn"
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason="3DUnetCNN fixtures are not beside this checkout")


def train(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return run_cli("train", *args, cwd=cwd, timeout=timeout)


def test_trains_from_another_working_directory_with_relative_data_paths(experiment, tmp_path):
    config = experiment("cli_ok", n_epochs=2)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = train("--config_filename", str(config), "--seed", "1", cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    work = config.parent / "cli_ok"
    assert f"results in {work}" in result.stdout
    assert list(pd.read_csv(work / LOG_FILENAME)["epoch"]) == [1, 2]
    assert (work / "model.pth").exists() and (work / "model_best.pth").exists()
    assert not list(elsewhere.iterdir()), "nothing may be written to the working directory"


def test_bad_config_exits_2_with_one_line_and_no_traceback(experiment, tmp_path):
    config = experiment("cli_bad", mutate=lambda c: c["training"].update(n_epoch=3))
    result = train("--config_filename", str(config), "--output_dir", str(tmp_path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == "error: training.n_epoch: unknown key; did you mean 'n_epochs'?"
    assert not (tmp_path / "cli_bad").exists(), "no work dir before the config is valid"


@pytest.mark.parametrize(
    ("tracker", "kwargs", "message"),
    [
        (
            "mlflow",
            {"tracking_uri": 123},
            "error: training.tracker_kwargs.tracking_uri: expected a non-empty string, got 123",
        ),
        (
            "wandb",
            {"mode": "bogus"},
            "error: training.tracker_kwargs.mode: expected one of ['online', 'offline', 'disabled', ",
        ),
    ],
)
def test_a_bad_tracker_setting_exits_2_with_one_line_before_any_compute(experiment, tmp_path, tracker, kwargs, message):
    # Issue 22, item 5: these were tracebacks once the tracker started.
    pytest.importorskip(tracker)
    config = experiment("cli_tracker", mutate=lambda c: c["training"].update(tracker=tracker, tracker_kwargs=kwargs))
    result = train("--config_filename", str(config), "--output_dir", str(tmp_path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(message)
    assert not (tmp_path / "cli_tracker").exists(), "no work dir before the config is valid"


def test_missing_data_file_exits_2_naming_the_file(experiment, tmp_path):
    def break_path(config):
        config["training_filenames"][1]["image"][2] = "nowhere/missing_t1ce.nii.gz"

    config = experiment("cli_missing", mutate=break_path)
    result = train("--config_filename", str(config), "--output_dir", str(tmp_path))
    assert result.returncode == 2
    missing = config.parent / "nowhere/missing_t1ce.nii.gz"
    assert f"error: training_filenames: {missing}: file does not exist" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_and_bad_machine_config_exit_2(tmp_path):
    result = train("--config_filename", str(tmp_path / "none.json"))
    assert result.returncode == 2 and "none.json: config does not exist" in result.stderr
    machine = tmp_path / "machine.json"
    machine.write_text(json.dumps({"n_gpu": 2}))
    config = tmp_path / "c.json"
    config.write_text("{}")
    result = train("--config_filename", str(config), "--machine_config_filename", str(machine))
    assert result.returncode == 2 and f"error: {machine}: n_gpu: unknown key; did you mean 'n_gpus'?" in result.stderr


def test_machine_config_and_overrides_are_applied_and_recorded(experiment, tmp_path):
    machine = tmp_path / "v100.json"
    machine.write_text(json.dumps({"use_multiprocessing": True, "n_workers": 1, "n_gpus": 2, "pin_memory": False}))
    config = experiment("cli_machine", n_epochs=1)
    result = train(
        "--config_filename",
        str(config),
        "--output_dir",
        str(tmp_path),
        "--machine_config_filename",
        str(machine),
        "--batch_size",
        "1",
        "--set",
        "training.n_epochs=2",
        "--set",
        "optimizer.lr=0.005",
    )
    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "cli_machine/config.json").read_text())
    assert saved["training"]["batch_size"] == 1 and saved["training"]["n_epochs"] == 2
    assert saved["optimizer"]["lr"] == 0.005
    assert "loader workers 1 | seed" in result.stderr
    assert json.loads(config.read_text())["training"]["n_epochs"] == 1, "the user's config file is never modified"
    threads = train(
        "--config_filename", str(config), "--output_dir", str(tmp_path / "t"), "--nthreads", "2", "--thread_workers"
    )
    assert threads.returncode == 0, threads.stderr
    assert "loader workers 2 (threads) | seed" in threads.stderr
    # 3DUnetCNN's use_multiprocessing: false is --thread_workers (it used to be read and ignored)
    machine.write_text(json.dumps({"use_multiprocessing": False, "n_workers": 2}))
    by_machine = train(
        "--config_filename", str(config), "--output_dir", str(tmp_path / "m"), "--machine_config_filename", str(machine)
    )
    assert by_machine.returncode == 0, by_machine.stderr
    assert "loader workers 2 (threads) | seed" in by_machine.stderr


def test_kill_9_at_random_moments_then_resume_loses_and_repeats_no_epoch(experiment, tmp_path):
    n_epochs = 12
    config = experiment("cli_kill", n_epochs=n_epochs)
    work = tmp_path / "cli_kill"
    args = [
        sys.executable,
        "-m",
        "unet3d.cli.train",
        "--config_filename",
        str(config),
        "--output_dir",
        str(tmp_path),
        "--seed",
        "3",
    ]
    rng = random.Random(0)
    for _ in range(3):
        process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 300
        while not (work / LOG_FILENAME).exists() and time.time() < deadline and process.poll() is None:
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        process.wait()
        if not (work / LOG_FILENAME).exists():
            continue  # killed before its first epoch ended: nothing to check yet
        epochs = list(pd.read_csv(work / LOG_FILENAME)["epoch"])
        assert epochs == list(range(1, len(epochs) + 1))
        assert ckpt.load_checkpoint(work / "model.pth")["epoch"] >= len(epochs) - 0
    result = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert list(pd.read_csv(work / LOG_FILENAME)["epoch"]) == list(range(1, n_epochs + 1))
    assert ckpt.load_checkpoint(work / "model.pth")["epoch"] == n_epochs
    assert not list(work.glob(".*.tmp*")), "no temporary file may survive a resume"


def test_cli_exit_code_names_the_failed_fold(experiment, tmp_path):
    config = experiment("cvfail", n_validation=0, n_epochs=1, mutate=with_cv(n_folds=2))
    run_experiment(config, tmp_path, RunOptions(seed=1), folds=[1])
    (tmp_path / "cvfail/fold1/model.pth").write_bytes(b"garbage")
    result = train("--config_filename", str(config), "--output_dir", str(tmp_path))
    assert result.returncode == 1
    assert "folds [1] failed" in result.stderr
    assert ckpt.load_checkpoint(tmp_path / "cvfail/fold2/model.pth")["epoch"] == 1


def test_too_many_folds_is_a_config_error_before_any_work(experiment, tmp_path):
    config = experiment("cvmany", n_validation=0, mutate=with_cv(n_folds=7))
    result = train("--config_filename", str(config), "--output_dir", str(tmp_path))
    assert result.returncode == 2
    assert "error: cross_validation.n_folds: 7 folds need at least 7 cases, got 6" in result.stderr
    assert not (tmp_path / "cvmany" / "fold1").exists()


def test_setup_only_groups_visits_writes_scripts_and_an_array_task_trains_its_fold(experiment, tmp_path):
    def grouped(config):
        with_cv(n_folds=2)(config)
        for i, case in enumerate(config["training_filenames"]):
            case["subject"] = f"patient{i // 3}"  # two subjects with three visits each
        config["cluster"] = {"gpus": 0, "cpus": 2, "time": "0-01:00:00", "partition": "gpu", "account": "lab"}

    config = experiment("cvslurm", n_validation=0, n_epochs=1, mutate=grouped)
    result = train("--config_filename", str(config), "--output_dir", str(tmp_path), "--setup_crossval_only")
    assert result.returncode == 0, result.stderr
    work = tmp_path / "cvslurm"
    assert not list(work.glob("fold*/model.pth")), "setup only trains nothing"
    folds = json.loads((work / "splits.json").read_text())["folds"]
    subjects_per_fold = [{case_id_subject(work, k, c) for c in fold["validation"]} for k, fold in enumerate(folds, 1)]
    assert subjects_per_fold[0].isdisjoint(subjects_per_fold[1])
    sbatch = (work / "submit_folds.sbatch").read_text()
    for line in (
        "#SBATCH --array=1-2",
        "#SBATCH --partition=gpu",
        "#SBATCH --account=lab",
        "#SBATCH --time=0-01:00:00",
        "#SBATCH --cpus-per-task=2",
    ):
        assert line in sbatch
    assert "--gres" not in sbatch
    for script in ("submit_folds.sbatch", "run_folds.sh"):
        assert subprocess.run(["bash", "-n", str(work / script)]).returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "2", "UNET3D_PYTHON": sys.executable}
    task = subprocess.run(
        ["bash", str(work / "submit_folds.sbatch")], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300
    )
    assert task.returncode == 0, task.stderr
    assert ckpt.load_checkpoint(work / "fold2/model.pth")["epoch"] == 1 and not (work / "fold1").exists()
    shell = subprocess.run(
        ["bash", str(work / "run_folds.sh"), "1"],
        env={**os.environ, "UNET3D_PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert shell.returncode == 0, shell.stderr
    assert ckpt.load_checkpoint(work / "fold1/model.pth")["epoch"] == 1


def test_fold_configs_are_written_once_and_a_summary_leaves_them_alone(experiment, tmp_path):
    # Issue 23: a plain --summary (or rerun) put n_epochs 3 back into the fold configs the SLURM tasks train from.
    config = experiment("cvonce", n_validation=0, n_epochs=3, mutate=with_cv(n_folds=2))
    common = ("--config_filename", str(config), "--output_dir", str(tmp_path))
    setup = train(*common, "--setup_crossval_only", "--set", "training.n_epochs=5")
    assert setup.returncode == 0, setup.stderr
    fold2 = tmp_path / "cvonce" / "fold2.json"
    written = fold2.read_text()
    summary = train(*common, "--summary")
    assert summary.returncode == 0, summary.stderr
    assert fold2.read_text() == written and json.loads(written)["training"]["n_epochs"] == 5
    rerun = train(*common, "--fold", "2")
    assert rerun.returncode == 2 and "Traceback" not in rerun.stderr
    assert "error:   fold2.json: training.n_epochs: 5 → 3" in rerun.stderr.splitlines()
    assert fold2.read_text() == written and not (tmp_path / "cvonce" / "fold2").exists()
    update = train(*common, "--update_fold_configs", "--setup_crossval_only")
    assert update.returncode == 0, update.stderr
    assert "--update_fold_configs: fold2.json: training.n_epochs: 5 → 3" in update.stderr
    assert json.loads(fold2.read_text())["training"]["n_epochs"] == 3


def case_id_subject(work: Path, fold: int, case_id: str) -> str:
    config = json.loads((work / f"fold{fold}.json").read_text())
    return next(c["subject"] for c in config["validation_filenames"] if c["case_id"] == case_id)


@needs_fixtures
def test_brats2020_config_trains_with_only_file_lists_and_sizes_changed(tmp_path):
    config = json.loads((FIXTURES / "brats2020_config.json").read_text())
    training = write_dataset(tmp_path / "data", 5, seed=1, shape_range=(20, 24))
    unlabelled = write_dataset(tmp_path / "data", 2, seed=2, prefix="val", shape_range=(20, 24), with_labels=False)
    config["training_filenames"] = [
        {"image": [f"data/{p}" for p in e["image"]], "label": f"data/{e['label']}"} for e in training
    ]
    config["bratsvalidation_filenames"] = [{"image": [f"data/{p}" for p in e["image"]]} for e in unlabelled]
    config["dataset"]["desired_shape"] = [64, 64, 64]  # the smallest shape its 5 stride-2 levels allow
    config["model"]["filters"] = [4, 4, 8, 8, 8, 8]
    config["training"]["n_epochs"] = 1
    path = tmp_path / "brats2020_config.json"
    path.write_text(json.dumps(config))
    result = train("--config_filename", str(path), "--fold", "1", timeout=600)
    assert result.returncode == 0, result.stderr
    work = tmp_path / "brats2020_config"
    assert len(json.loads((work / "splits.json").read_text())["folds"]) == 5
    assert ckpt.load_checkpoint(work / "fold1/model.pth")["epoch"] == 1
    assert (work / "fold1/training_log.csv").read_text().startswith("epoch,loss,lr,val_loss,val_dice")


@needs_fixtures
def test_sppin_config_setup_keeps_each_subjects_visits_in_one_fold(tmp_path):
    config = json.loads((FIXTURES / "sppin_config.json").read_text())
    rng = np.random.default_rng(0)
    cases = []
    for subject in range(6):
        for visit in range(1 + subject % 3):
            case_id = f"PT_{subject:02d}_{visit}"
            entry = write_case(tmp_path / "aligned", case_id, (16, 16, 16), (1.0, 1.0, 1.0), rng)
            label = tmp_path / "aligned" / entry["label"]
            image = nib.load(label)  # sppin segments one label: merge the tumour regions
            nib.save(nib.Nifti1Image((np.asanyarray(image.dataobj) > 0).astype(np.uint8), image.affine), label)
            cases.append(
                {
                    "image": [f"aligned/{p}" for p in entry["image"]],
                    "label": f"./aligned/{entry['label']}",
                    "subject": f"PT_{subject:02d}",
                }
            )
    config["training_filenames"] = cases
    path = tmp_path / "sppin_config.json"
    path.write_text(json.dumps(config))
    result = train("--config_filename", str(path), "--setup_crossval_only", timeout=600)
    assert result.returncode == 0, result.stderr
    assert "legacy spelling" in result.stderr
    work = tmp_path / "sppin_config"
    folds = json.loads((work / "splits.json").read_text())["folds"]
    assert len(folds) == 5
    fold_of_subject: dict[str, set[int]] = {}
    for k, fold in enumerate(folds, start=1):
        for case_id in fold["validation"]:
            fold_of_subject.setdefault(case_id[:5], set()).add(k)
    assert all(len(f) == 1 for f in fold_of_subject.values()) and len(fold_of_subject) == 6
    assert not list(work.glob("fold*/model.pth"))
    assert subprocess.run(["bash", "-n", str(work / "submit_folds.sbatch")]).returncode == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--dist_backend", "nonsense"), "error: --dist_backend: 'nonsense' is not a torch.distributed backend here"),
        (("--n_devices", "-1"), "error: --n_devices: expected 0 or more, got -1"),
        (("--nthreads", "-2"), "error: --nthreads: expected 0 or more, got -2"),
    ],
)
def test_wrong_run_flags_are_one_line(experiment, tmp_path, flags, message):
    # Issue 22: a wrong --dist_backend was a traceback under torchrun; --n_devices -1 was accepted silently.
    result = train("--config_filename", str(experiment("flags")), "--output_dir", str(tmp_path), *flags)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(message)


def test_a_rerun_and_a_fold_task_do_not_read_the_checked_files_again(tmp_path):
    data = tmp_path / "data"
    entries = write_dataset(data, 4, seed=3, shape_range=(16, 18))
    config = tiny_config(entries, n_validation=0, n_epochs=1)
    with_cv(n_folds=2)(config)
    path = data / "checked.json"
    path.write_text(json.dumps(config))
    settled = max(p.stat().st_ctime for p in data.rglob("*.nii.gz")) + 3.2  # files this young are not remembered
    time.sleep(max(0.0, settled - time.time()))
    env = {**os.environ, "UNET3D_CACHE_DIR": str(tmp_path / "records")}
    common = ["--config_filename", str(path), "--output_dir", str(tmp_path), "--setup_crossval_only"]
    first = subprocess.run([sys.executable, "-m", "unet3d.cli.train", *common], capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    assert "passed this check before" not in first.stderr
    rerun = subprocess.run([sys.executable, "-m", "unet3d.cli.train", *common], capture_output=True, text=True, env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert "4 of 4 cases passed this check before with their files as they are: not read again" in rerun.stderr
    fold = tmp_path / "checked" / "fold1.json"
    task = subprocess.run(
        [sys.executable, "-m", "unet3d.cli.train", "--config_filename", str(fold)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert task.returncode == 0, task.stderr
    assert "4 of 4 cases passed this check before" in task.stderr  # its training and held-out cases

"""`--device` as a user meets it: an absent device refused in one line (exit 2), a named one recorded in the run."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import run_cli
from unet3d.devices import KINDS, accelerator_type, torch_sees

# A kind of device this machine lacks (on a CPU-only machine: CUDA, the one users ask for most).
ABSENT = next(kind for kind in ("cuda", "npu", "xpu", "mps") if kind != accelerator_type())


def assert_refused(result, device: str = ABSENT) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"error: device '{device}' was asked for (--device / training.device), but {torch_sees()}"
    )
    assert lines[0].endswith(f"{device} devices need {KINDS[device].provider}")


@pytest.mark.parametrize("where", ["flag", "config"])
def test_train_refuses_an_absent_device_before_any_work(experiment, tmp_path, where):
    def ask(config):
        config["training"]["device"] = ABSENT if where == "config" else "auto"

    config = experiment(f"absent_{where}", mutate=ask)
    flag = ["--device", ABSENT] if where == "flag" else []
    result = run_cli("train", "--config_filename", str(config), "--output_dir", str(tmp_path), *flag)
    assert_refused(result)
    assert not (tmp_path / f"absent_{where}").exists(), "no work dir for a run that cannot start"


def test_setup_only_writes_scripts_for_a_device_that_the_cluster_has(experiment, tmp_path):
    """--setup_crossval_only runs where the devices are not (a login node): the scripts ask SLURM for them."""

    def on_npus(config):
        config["cross_validation"] = {"n_folds": 2}
        config["training"]["device"] = "npu"
        config["cluster"] = {"gpus": 8, "cpus": 72}

    config = experiment("npu_cv", n_validation=0, mutate=on_npus)
    result = run_cli("train", "--config_filename", str(config), "--output_dir", str(tmp_path), "--setup_crossval_only")
    assert result.returncode == 0, result.stderr
    sbatch = (tmp_path / "npu_cv" / "submit_folds.sbatch").read_text()
    assert "#SBATCH --gres=npu:8" in sbatch and "--nproc_per_node 8" in sbatch and "--n_devices 8" in sbatch
    assert "ASCEND_RT_VISIBLE_DEVICES=0 bash run_folds.sh" in (tmp_path / "npu_cv" / "run_folds.sh").read_text()


def test_predict_refuses_an_absent_device(trained_cv, tmp_path):
    _, work, folder = trained_cv
    cases = ["--model_dirs", str(work), "--input", str(folder / "extra"), "--output_directory", str(tmp_path / "out")]
    assert_refused(run_cli("predict", *cases, "--device", ABSENT))
    assert not (tmp_path / "out").exists()


def test_device_flag_overrides_the_config_and_ngpus_still_works(experiment, tmp_path):
    config = experiment("on_cpu", n_epochs=1)
    result = run_cli(
        "train", "--config_filename", str(config), "--output_dir", str(tmp_path), "--device", "cpu", "--ngpus", "0"
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "on_cpu" / "config.json").read_text())["training"]["device"] == "cpu"
    assert f"device CPU ({torch.get_num_threads()} threads)" in (tmp_path / "on_cpu" / "train.log").read_text()
    assert "device auto:" not in result.stderr, "a named CPU is no fallback"

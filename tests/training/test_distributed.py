"""DistributedDataParallel under torchrun, on the CPU with the gloo backend and 2 processes."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd

from unet3d import checkpoint as ckpt
from unet3d.training.history import LOG_FILENAME


def torchrun(config, output_dir, *extra: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "unet3d.cli.train",
        "--config_filename",
        str(config),
        "--output_dir",
        str(output_dir),
        "--seed",
        "1",
        *extra,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_two_process_run_trains_resumes_and_writes_one_set_of_outputs(experiment, tmp_path):
    ddp = experiment("ddp", n_epochs=4, mutate=lambda c: c["training"].update(batch_size=1))
    result = torchrun(ddp, tmp_path)
    assert result.returncode == 0, result.stderr
    work = tmp_path / "ddp"
    log = pd.read_csv(work / LOG_FILENAME)
    assert list(log["epoch"]) == [1, 2, 3, 4]
    banner = (work / "train.log").read_text()
    assert "x2 processes (DistributedDataParallel)" in banner
    assert "batch size 1 per process, 2 in all (effective)" in banner
    assert result.stdout.count("results in") == 1, "only rank 0 reports"
    assert sorted(p.name for p in work.glob("*.pth")) == ["model.pth", "model_best.pth"]
    assert not list(work.rglob("*.tmp")) and (work / "validation/metrics.csv").exists()

    single = experiment("single", n_epochs=4)  # one process with the same effective batch size of 2
    subprocess.run(
        [
            sys.executable,
            "-m",
            "unet3d.cli.train",
            "--config_filename",
            str(single),
            "--output_dir",
            str(tmp_path),
            "--seed",
            "1",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    single_log = pd.read_csv(tmp_path / "single" / LOG_FILENAME)
    for losses in (log["loss"], single_log["loss"]):
        assert losses.iloc[-1] < losses.iloc[0]
    assert abs(log["loss"].iloc[-1] - single_log["loss"].iloc[-1]) < 0.25 * single_log["loss"].iloc[-1]

    result = torchrun(ddp, tmp_path, "--set", "training.n_epochs=5")
    assert result.returncode == 0, result.stderr
    assert list(pd.read_csv(work / LOG_FILENAME)["epoch"]) == [1, 2, 3, 4, 5]
    assert ckpt.load_checkpoint(work / "model.pth")["epoch"] == 5
    assert json.loads((work / "config.json").read_text())["training"]["n_epochs"] == 5

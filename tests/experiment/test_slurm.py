"""The SLURM array script's forms: one GPU, several GPUs on one node (torchrun), several nodes (srun torchrun)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from unet3d.config.fields import parse_section
from unet3d.config.schema import ClusterConfig
from unet3d.errors import ConfigError
from unet3d.experiment.slurm import (
    LOGS_FOLDER,
    cluster_lists_gpus,
    render_sbatch,
    render_shell,
    write_launch_scripts,
)


def check_syntax(tmp_path: Path, text: str) -> None:
    script = tmp_path / "script.sh"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def test_single_gpu_task_runs_the_fold_config_of_its_array_index(tmp_path):
    text = render_sbatch(Path("/work/exp"), 5, ClusterConfig(), "exp")
    check_syntax(tmp_path, text)
    assert "#SBATCH --array=1-5" in text and "#SBATCH --gres=gpu:1" in text
    assert "-m unet3d.cli.train --config_filename /work/exp/fold${fold}.json --nthreads 7 --n_devices 1" in text
    assert "unet3d.cli.launch" not in text
    assert 'scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"' in text


def test_several_gpus_train_each_fold_under_torchrun(tmp_path):
    text = render_sbatch(Path("/w"), 3, ClusterConfig(gpus=4, cpus=32, requeue_on_timeout=False), "exp")
    check_syntax(tmp_path, text)
    assert "#SBATCH --gres=gpu:4" in text and "--nodes" not in text
    assert "exec ${UNET3D_PYTHON:-" in text
    assert (
        "-m unet3d.cli.launch --standalone --nproc_per_node 4 -m unet3d.cli.train --config_filename "
        "/w/fold${fold}.json --nthreads 7 --n_devices 4" in text
    )


def test_several_nodes_use_srun_and_a_rendezvous_on_the_first_node(tmp_path):
    text = render_sbatch(Path("/w"), 2, ClusterConfig(gpus=2, nodes=3), "exp")
    check_syntax(tmp_path, text)
    assert "#SBATCH --nodes=3" in text and "#SBATCH --ntasks-per-node=1" in text
    assert "srun ${UNET3D_PYTHON:-" in text and "--nnodes 3 --nproc_per_node 2" in text
    assert "--rdzv_backend c10d" in text and 'head -n 1):$((20000 + SLURM_JOB_ID % 10000))"' in text


def test_two_multi_node_jobs_get_different_rendezvous_ports():
    text = render_sbatch(Path("/w"), 2, ClusterConfig(gpus=2, nodes=2), "exp")
    expression = text.split("head -n 1):")[1].split('"')[0]
    ports = [
        subprocess.run(
            ["bash", "-c", f"echo {expression}"], env={"SLURM_JOB_ID": job}, capture_output=True, text=True
        ).stdout.strip()
        for job in ("4711", "4712")
    ]
    assert ports == ["24711", "24712"]


def test_shell_script_loops_over_the_given_or_all_folds(tmp_path):
    text = render_shell(Path("/w"), 4)
    check_syntax(tmp_path, text)
    assert "folds=($(seq 1 4))" in text and 'failed+=("${fold}")' in text


def test_paths_with_spaces_are_quoted_and_the_job_name_is_plain(tmp_path):
    work = tmp_path / "my experiments" / "exp v1"
    text = render_sbatch(work, 2, ClusterConfig(), "exp v1; rm -rf ~")
    check_syntax(tmp_path, text)
    assert "#SBATCH --job-name=exp_v1__rm_-rf__" in text
    assert f'#SBATCH --output="{work}/slurm_logs/fold%a_%A.out"' in text
    assert f"sbatch '{work}/submit_folds.sbatch'" in text


def test_a_work_dir_that_cannot_be_quoted_in_a_script_is_refused():
    with pytest.raises(ConfigError, match="cannot quote safely"):
        render_sbatch(Path("/w/exp\ntouch /tmp/pwned"), 2, ClusterConfig(), "exp")


@pytest.mark.parametrize(
    ("device", "gres", "visible"),
    [
        ("auto", "gpu", "CUDA_VISIBLE_DEVICES"),
        ("cuda", "gpu", "CUDA_VISIBLE_DEVICES"),
        ("npu", "npu", "ASCEND_RT_VISIBLE_DEVICES"),
        ("xpu", "gpu", "ZE_AFFINITY_MASK"),
        ("cpu", None, None),
    ],
)
def test_the_scripts_ask_for_the_devices_of_training_device(tmp_path, device, gres, visible):
    text = render_sbatch(Path("/w"), 2, ClusterConfig(gpus=8, cpus=72), "exp", device)
    check_syntax(tmp_path, text)
    assert (f"#SBATCH --gres={gres}:8" in text) if gres else ("--gres" not in text)
    assert (
        "--nproc_per_node 8 -m unet3d.cli.train --config_filename /w/fold${fold}.json --nthreads 8 --n_devices 8"
        in text
    )
    shell = render_shell(Path("/w"), 2, device)
    check_syntax(tmp_path, shell)
    assert (f"{visible}=1 bash run_folds.sh 2 4" in shell) if visible else ("Parallel" not in shell)


def test_the_output_folder_exists_before_sbatch_and_a_requeue_appends_to_the_output(tmp_path):
    # SLURM opens the --output file before the script's first line runs: a missing folder fails every task.
    sbatch, _ = write_launch_scripts(tmp_path / "exp", 3, ClusterConfig(), "exp", "cuda")
    assert (tmp_path / "exp" / LOGS_FOLDER).is_dir()
    assert "#SBATCH --open-mode=append" in sbatch.read_text()


FAKE_TRAINING = """import signal, sys, time
def stop(signum, frame):
    print("saved, exiting", flush=True)
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
print("training", flush=True)
time.sleep(60)
"""


def test_sigterm_ends_the_task_with_training_s_status_not_the_shell_s_death(tmp_path):
    # The default script (requeue on) runs training in the background; SIGTERM to the shell alone (`scancel --batch`)
    # or to both must end it with 143 after training has exited, not with bash killed by signal 15.
    fake = tmp_path / "fake_python"
    fake.write_text(f"#!/bin/bash\nexec {sys.executable} -c '{FAKE_TRAINING}'\n")
    fake.chmod(0o755)
    script = tmp_path / "task.sh"
    script.write_text(render_sbatch(tmp_path / "exp", 1, ClusterConfig(), "exp", "cpu"))
    environment = {**os.environ, "UNET3D_PYTHON": str(fake), "SLURM_ARRAY_TASK_ID": "1"}
    task = subprocess.Popen(["bash", str(script)], env=environment, stdout=subprocess.PIPE, text=True)
    assert "starts on" in task.stdout.readline() and task.stdout.readline().strip() == "training"
    task.send_signal(signal.SIGTERM)
    output = task.communicate(timeout=30)[0]
    assert task.returncode == 143
    assert "saved, exiting" in output and "exit status 143" in output


def test_device_auto_asks_for_a_gpu_only_where_slurm_lists_one(tmp_path):
    on_gpus = render_sbatch(Path("/w"), 2, ClusterConfig(), "exp", "auto", gpus_listed=True)
    unknown = render_sbatch(Path("/w"), 2, ClusterConfig(), "exp", "auto", gpus_listed=None)
    on_cpus = render_sbatch(Path("/w"), 2, ClusterConfig(), "exp", "auto", gpus_listed=False)
    assert "#SBATCH --gres=gpu:1" in on_gpus and "#SBATCH --gres=gpu:1" in unknown
    assert "--gres" not in on_cpus and "--n_devices 0" in on_cpus
    check_syntax(tmp_path, on_cpus)


@pytest.mark.parametrize(
    ("listing", "expected"),
    [
        ("(null)\n(null)\n", False),
        ("gpu:a100:4(S:0-1)\n(null)\n", True),
        ("gpu:2,shard:8\n", True),
        ("gpuish:1\n", False),
    ],
)
def test_the_gpus_slurm_lists_are_read_from_sinfo(tmp_path, monkeypatch, listing, expected):
    sinfo = tmp_path / "sinfo"
    sinfo.write_text(f"#!/bin/bash\nprintf '{listing}'\n")
    sinfo.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    assert cluster_lists_gpus() is expected


def test_without_sinfo_the_gpus_are_unknown(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert cluster_lists_gpus() is None


def test_a_time_limit_in_minutes_may_be_a_number(tmp_path):
    cluster = parse_section(ClusterConfig, {"time": 3}, "cluster")
    assert "#SBATCH --time=3" in render_sbatch(Path("/w"), 1, cluster, "exp")
    with pytest.raises(ConfigError, match=r"cluster\.time: must be at least 1"):
        parse_section(ClusterConfig, {"time": 0}, "cluster")

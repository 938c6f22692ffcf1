"""The SLURM array script's forms: one GPU, several GPUs on one node (torchrun), several nodes (srun torchrun)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from unet3d.config.schema import ClusterConfig
from unet3d.experiment.slurm import render_sbatch, render_shell


def check_syntax(tmp_path: Path, text: str) -> None:
    script = tmp_path / "script.sh"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def test_single_gpu_task_runs_the_fold_config_of_its_array_index(tmp_path):
    text = render_sbatch(Path("/work/exp"), 5, ClusterConfig(), "exp")
    check_syntax(tmp_path, text)
    assert "#SBATCH --array=1-5" in text and "#SBATCH --gres=gpu:1" in text
    assert "-m unet3d.cli.train --config_filename /work/exp/fold${fold}.json --nthreads 7 --n_devices 1" in text
    assert "torch.distributed.run" not in text
    assert 'scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"' in text


def test_several_gpus_train_each_fold_under_torchrun(tmp_path):
    text = render_sbatch(Path("/w"), 3, ClusterConfig(gpus=4, cpus=32, requeue_on_timeout=False), "exp")
    check_syntax(tmp_path, text)
    assert "#SBATCH --gres=gpu:4" in text and "--nodes" not in text
    assert "exec ${UNET3D_PYTHON:-" in text
    assert (
        "-m torch.distributed.run --standalone --nproc_per_node 4 -m unet3d.cli.train --config_filename "
        "/w/fold${fold}.json --nthreads 7 --n_devices 4" in text
    )


def test_several_nodes_use_srun_and_a_rendezvous_on_the_first_node(tmp_path):
    text = render_sbatch(Path("/w"), 2, ClusterConfig(gpus=2, nodes=3), "exp")
    check_syntax(tmp_path, text)
    assert "#SBATCH --nodes=3" in text and "#SBATCH --ntasks-per-node=1" in text
    assert "srun ${UNET3D_PYTHON:-" in text and "--nnodes 3 --nproc_per_node 2" in text
    assert "--rdzv_backend c10d" in text and 'head -n 1):29500"' in text


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
    import pytest

    from unet3d.errors import ConfigError

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

"""The SLURM array script's forms: one GPU, several GPUs on one node (torchrun), several nodes (srun torchrun)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from unet3d.config.schema import ClusterConfig
from unet3d.cv.slurm import render_sbatch, render_shell


def check_syntax(tmp_path: Path, text: str) -> None:
    script = tmp_path / "script.sh"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def test_single_gpu_task_runs_the_fold_config_of_its_array_index(tmp_path):
    text = render_sbatch(Path("/work/exp"), 5, ClusterConfig(), "exp")
    check_syntax(tmp_path, text)
    assert "#SBATCH --array=1-5" in text and "#SBATCH --gres=gpu:1" in text
    assert "-m unet3d.cli.train --config_filename /work/exp/fold${fold}.json --nthreads 7 --ngpus 1" in text
    assert "torch.distributed.run" not in text
    assert 'scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"' in text


def test_several_gpus_train_each_fold_under_torchrun(tmp_path):
    text = render_sbatch(Path("/w"), 3, ClusterConfig(gpus=4, cpus=32, requeue_on_timeout=False), "exp")
    check_syntax(tmp_path, text)
    assert "#SBATCH --gres=gpu:4" in text and "--nodes" not in text
    assert "exec ${UNET3D_PYTHON:-" in text
    assert (
        "-m torch.distributed.run --standalone --nproc_per_node 4 -m unet3d.train --config_filename "
        "/w/fold${fold}.json --nthreads 7 --ngpus 4" in text
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

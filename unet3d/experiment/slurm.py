"""Launch scripts for running folds in parallel: a SLURM array job (one task per fold) and a plain shell loop.

Each task runs `unet3d-train` on one fold config. A fold that is cut off (time limit, preemption) resumes from its
last completed epoch when its task runs again; with `requeue_on_timeout` the task asks SLURM to requeue itself
shortly before its time limit.
"""

from __future__ import annotations

import logging
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from unet3d.atomic import atomic_write_text
from unet3d.config.schema import ClusterConfig
from unet3d.devices import KINDS
from unet3d.errors import ConfigError

log = logging.getLogger("unet3d")

SBATCH_FILENAME = "submit_folds.sbatch"
SHELL_FILENAME = "run_folds.sh"
LOGS_FOLDER = "slurm_logs"
RENDEZVOUS_PORTS = (20000, 30000)  # a multi-node fold's c10d port: 20000 + job id modulo 10000


def _train_command(work_dir: Path, fold: str, n_workers: int, n_devices: int, nodes: int = 1) -> str:
    """The command of one fold: plain on one device; torchrun (one process per device) on several; `srun torchrun`
    with a c10d rendezvous on the first node across several nodes. The fold config says which device."""
    python = f"${{UNET3D_PYTHON:-{shlex.quote(sys.executable)}}}"
    arguments = (
        f"--config_filename {shlex.quote(str(work_dir))}/fold{fold}.json --nthreads {n_workers} --n_devices {n_devices}"
    )
    if n_devices <= 1 and nodes <= 1:
        return f"{python} -m unet3d.cli.train {arguments}"
    if nodes <= 1:
        torchrun = f"{python} -m unet3d.cli.launch --standalone --nproc_per_node {n_devices}"
        return f"{torchrun} -m unet3d.cli.train {arguments}"
    # The port comes from the job id, so two fold tasks whose first node is the same do not share one TCPStore.
    rendezvous = (
        f'--nnodes {nodes} --nproc_per_node {max(n_devices, 1)} --rdzv_id "${{SLURM_JOB_ID}}" --rdzv_backend c10d '
        '--rdzv_endpoint "$(scontrol show hostnames "${SLURM_JOB_NODELIST}" | head -n 1):'
        f'$(({RENDEZVOUS_PORTS[0]} + SLURM_JOB_ID % {RENDEZVOUS_PORTS[1] - RENDEZVOUS_PORTS[0]}))"'
    )
    return f"srun {python} -m unet3d.cli.launch {rendezvous} -m unet3d.cli.train {arguments}"


def job_name_for(name: str) -> str:
    """A SLURM job name from a work dir's name: characters other than letters, digits, '_', '.' and '-' become '_'."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "unet3d"


def _script_path(path: Path) -> str:
    """A path for an #SBATCH line, in double quotes (sbatch strips them); refused when it cannot be quoted there."""
    text = str(path)
    if re.search(r'["\\$`\x00-\x1f\x7f]', text):
        raise ConfigError(
            f"{text}: the work dir's path holds a quote, backslash, '$', '`' or control character, which a SLURM "
            "script cannot quote safely; choose another --output_dir"
        )
    return f'"{text}"'


def cluster_lists_gpus() -> bool | None:
    """Whether SLURM's nodes offer a GPU generic resource (`sinfo -o %G`); None where sinfo cannot say (no SLURM on
    this machine, or it fails)."""
    sinfo = shutil.which("sinfo")
    if sinfo is None:
        return None
    try:
        listed = subprocess.run([sinfo, "-h", "-o", "%G"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if listed.returncode != 0:
        return None
    return any(re.match(r"gpu(:|$|\()", gres) for line in listed.stdout.split() for gres in line.split(","))


def gres_name(device: str, gpus_listed: bool | None = None) -> str | None:
    """The SLURM generic resource of `training.device`: gpu (CUDA, XPU), npu (Ascend), none (CPU, MPS); for 'auto',
    gpu unless SLURM says its nodes have none (`gpus_listed` False: a CPU cluster refuses a gpu request)."""
    if device == "auto":
        return None if gpus_listed is False else "gpu"
    return KINDS[device].slurm_gres


def render_sbatch(
    work_dir: Path,
    n_folds: int,
    cluster: ClusterConfig,
    job_name: str,
    device: str = "auto",
    gpus_listed: bool | None = None,
) -> str:
    """The text of a SLURM array script whose task k trains `<work_dir>/fold{k}.json` on `cluster.gpus` devices of
    the `device` kind (see `gres_name` for 'auto'). Every value from the config was checked against a strict pattern
    when it was loaded (see `ClusterConfig`); paths are quoted. SLURM opens the output file before the script runs,
    so `write_launch_scripts` creates its folder; a requeued task appends to it."""
    logs = work_dir / LOGS_FOLDER
    gres = gres_name(device, gpus_listed) if cluster.gpus else None
    n_devices = cluster.gpus if gres or device != "auto" else 0
    lines = [
        "#!/bin/bash",
        f"#SBATCH --job-name={job_name_for(job_name)}",
        f"#SBATCH --array=1-{n_folds}",
        f"#SBATCH --cpus-per-task={cluster.cpus}",
        f"#SBATCH --mem={cluster.mem}",
        f"#SBATCH --time={cluster.time}",
        f"#SBATCH --output={_script_path(logs / 'fold%a_%A.out')}",
        "#SBATCH --open-mode=append",
    ]
    if gres:
        lines.append(f"#SBATCH --gres={gres}:{cluster.gpus}")
    if cluster.nodes > 1:
        lines += [f"#SBATCH --nodes={cluster.nodes}", "#SBATCH --ntasks-per-node=1"]
    if cluster.partition:
        lines.append(f"#SBATCH --partition={cluster.partition}")
    if cluster.account:
        lines.append(f"#SBATCH --account={cluster.account}")
    if cluster.requeue_on_timeout:
        lines += ["#SBATCH --requeue", f"#SBATCH --signal=B:USR1@{cluster.requeue_signal_seconds}"]
    lines += [f"#SBATCH {option}" for option in cluster.sbatch_options]
    lines += [
        "#",
        "# Written by unet3d-train --setup_crossval_only. Submit with: sbatch "
        + shlex.quote(str(work_dir / SBATCH_FILENAME)),
        "# Resubmitting (or a requeue) resumes every unfinished fold from its last completed epoch;",
        "# finished folds exit at once. Run one task here with: SLURM_ARRAY_TASK_ID=1 bash <this file>",
        "set -uo pipefail",
        f"mkdir -p {shlex.quote(str(logs))} || exit 1",
        *cluster.setup,
        'fold="${SLURM_ARRAY_TASK_ID:?set SLURM_ARRAY_TASK_ID to the fold number}"',
    ]
    command = _train_command(
        work_dir, "${fold}", max(cluster.cpus // max(n_devices, 1) - 1, 0), n_devices, cluster.nodes
    )
    lines.append('echo "fold ${fold}: starts on $(hostname) at $(date)"')
    if cluster.requeue_on_timeout:
        lines += [
            "requeue() {",
            '    echo "fold ${fold}: time limit near, requeueing to resume later"',
            '    scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"',
            "}",
            "trap requeue USR1",
            "# SIGTERM (scancel, preemption, a requeue) goes on to training, which saves nothing half-written and",
            "# exits 143; this shell waits for it and ends with its status instead of dying of the signal itself.",
            "trap 'kill -TERM \"$pid\" 2>/dev/null' TERM",
            f"{command} &",
            "pid=$!",
            "# wait returns early when a signal arrives; then wait again while training is still running.",
            'status=0; wait "$pid" || status=$?',
            'while kill -0 "$pid" 2>/dev/null; do status=0; wait "$pid" || status=$?; done',
            'echo "fold ${fold}: exit status ${status} at $(date)"',
            'exit "$status"',
        ]
    else:
        lines.append(f"exec {command}")
    return "\n".join(lines) + "\n"


def render_shell(work_dir: Path, n_folds: int, device: str = "auto") -> str:
    """A plain bash script that trains the given folds (default: all) one after another, for machines without
    a scheduler; several copies that see different devices (CUDA_VISIBLE_DEVICES, ASCEND_RT_VISIBLE_DEVICES, ...)
    run folds in parallel."""
    command = _train_command(work_dir, "${fold}", 0, 1)
    visible = KINDS["cuda" if device == "auto" else device].visible_devices
    parallel = (
        [
            "# Parallel on two devices:",
            f"#   {visible}=0 bash run_folds.sh 1 3 5 &  {visible}=1 bash run_folds.sh 2 4",
        ]
        if visible
        else []
    )
    return (
        "\n".join(
            [
                "#!/bin/bash",
                "# Written by unet3d-train --setup_crossval_only.",
                "# Usage: bash run_folds.sh [FOLD ...]  (default: all folds, one after another).",
                *parallel,
                "set -uo pipefail",
                f'folds=("$@"); [ ${{#folds[@]}} -gt 0 ] || folds=($(seq 1 {n_folds}))',
                "failed=()",
                'for fold in "${folds[@]}"; do',
                f'    {command} || failed+=("${{fold}}")',
                "done",
                'if [ ${#failed[@]} -gt 0 ]; then echo "failed folds: ${failed[*]}" >&2; exit 1; fi',
            ]
        )
        + "\n"
    )


def write_launch_scripts(
    work_dir: Path, n_folds: int, cluster: ClusterConfig, job_name: str, device: str = "auto"
) -> list[Path]:
    """Write `submit_folds.sbatch` and `run_folds.sh` into the CV work dir (executable), for `training.device`, and
    the folder of the tasks' output files."""
    gpus_listed = cluster_lists_gpus() if device == "auto" and cluster.gpus else None
    if gpus_listed is False:
        log.info("training.device auto: sinfo lists no GPU on this cluster, so the fold tasks ask for none")
    elif device == "auto" and cluster.gpus:
        log.info(
            "training.device auto: the fold tasks ask for %d GPU(s) (--gres=gpu:%d)%s; set cluster.gpus 0 for a CPU "
            "cluster",
            cluster.gpus,
            cluster.gpus,
            "" if gpus_listed else " (no sinfo here to ask the cluster)",
        )
    (work_dir / LOGS_FOLDER).mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in (
        (SBATCH_FILENAME, render_sbatch(work_dir, n_folds, cluster, job_name, device, gpus_listed)),
        (SHELL_FILENAME, render_shell(work_dir, n_folds, device)),
    ):
        path = work_dir / name
        atomic_write_text(path, text)
        path.chmod(0o755)
        paths.append(path)
    return paths

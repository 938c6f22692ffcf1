"""A real one-node SLURM cluster for the tests: munged, slurmctld and slurmd started in a temporary folder.

Debian's `slurm-wlm` and `munge` (installed by `.ci/run` where apt-get exists) provide the daemons. The cluster has
its own munge socket, ports, state and spool folders under the temporary folder, so it touches no system SLURM; the
commands find it through `SLURM_CONF`. `stop()` ends the daemons it started, by pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "sacct", "scontrol", "srun")
MUNGE_KEY = Path("/etc/munge/munge.key")
ACTIVE = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_HOLD", "RESIZING", "SUSPENDED")


def _which(name: str) -> str | None:
    """A SLURM or munge program: the daemons live in /usr/sbin, which a non-login PATH may lack."""
    return shutil.which(name, path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")


def why_unavailable() -> str | None:
    """Why a cluster cannot be started here, or None when it can."""
    missing = [name for name in DAEMONS if _which(name) is None]
    if missing:
        return f"SLURM is not installed ({', '.join(missing)} missing; .ci/run installs slurm-wlm and munge with apt)"
    if os.geteuid() != 0:
        return "slurmd needs root to start job steps as the submitting user"
    if not MUNGE_KEY.is_file():
        return f"{MUNGE_KEY} is missing (the munge package writes it)"
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def _memory_mb() -> int:
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20 * 0.9)


@dataclass
class Cluster:
    """A started cluster: `env` holds SLURM_CONF for the commands; `run` calls them."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    pids: list[int] = field(default_factory=list)

    @property
    def node(self) -> str:
        return socket.gethostname().split(".")[0]

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(command, env=self.env, capture_output=True, text=True, check=check, timeout=120)

    def start(self, cpus: int) -> Cluster:
        for name in ("state", "spool", "log"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        munge_socket = self.root / "munge.socket"
        self._daemon(
            "munged",
            "--force",
            f"--socket={munge_socket}",
            f"--key-file={MUNGE_KEY}",
            f"--pid-file={self.root / 'munged.pid'}",
            f"--log-file={self.root / 'log' / 'munged.log'}",
            f"--seed-file={self.root / 'munged.seed'}",
        )
        conf = self.root / "slurm.conf"
        conf.write_text(self._config(munge_socket, cpus))
        self.env = {**os.environ, "SLURM_CONF": str(conf)}
        for name in ("slurmctld", "slurmd"):
            self._daemon(name, "-f", str(conf), f"-L{self.root / 'log' / (name + '.log')}")
        self._wait_until_idle()
        return self

    def _daemon(self, name: str, *arguments: str) -> None:
        pid_file = self.root / f"{name}.pid"
        subprocess.run(
            [_which(name), *arguments],
            check=True,
            capture_output=True,
            timeout=60,
            env={**os.environ, "SLURM_CONF": str(self.root / "slurm.conf")},
        )
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text().strip():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start; see {self.root / 'log'}")
            time.sleep(0.2)
        self.pids.append(int(pid_file.read_text().split()[0]))

    def _config(self, munge_socket: Path, cpus: int) -> str:
        root = self.root
        return "\n".join(
            [
                "ClusterName=unet3dtest",
                f"SlurmctldHost={self.node}",
                "SlurmUser=root",
                "SlurmdUser=root",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={munge_socket}",
                f"StateSaveLocation={root / 'state'}",
                f"SlurmdSpoolDir={root / 'spool'}",
                f"SlurmctldPidFile={root / 'slurmctld.pid'}",
                f"SlurmdPidFile={root / 'slurmd.pid'}",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "MpiDefault=none",
                "SwitchType=switch/none",
                "SchedulerType=sched/backfill",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "ReturnToService=2",
                "JobCompType=jobcomp/none",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "MinJobAge=600",
                "KillWait=10",
                "SlurmctldTimeout=30",
                "SlurmdTimeout=30",
                "InactiveLimit=0",
                "Waittime=0",
                "SchedulerParameters=sched_interval=2",
                f"NodeName={self.node} CPUs={cpus} RealMemory={_memory_mb()} State=UNKNOWN",
                f"PartitionName=test Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
                "",
            ]
        )

    def _wait_until_idle(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.run("sinfo", "-h", "-o", "%t", check=False).stdout.strip()
            if state in ("idle", "mix", "alloc"):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the node did not come up (sinfo: {state!r}); see {self.root / 'log'}")

    def stop(self) -> None:
        """End the daemons this cluster started, by pid, newest first."""
        for pid in reversed(self.pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
        self.pids.clear()

    def submit(self, *arguments: str) -> str:
        """`sbatch --parsable ARGS` → the job id."""
        return self.run("sbatch", "--parsable", *arguments).stdout.strip().split(";")[0]

    def tasks(self, job: str) -> dict[str, dict[str, str]]:
        """Each task of a job (its array index, or the job id) → scontrol's fields (JobState, ExitCode, Restarts,
        ...); there is no accounting database here for sacct."""
        out = self.run("scontrol", "-o", "show", "job", job, check=False).stdout
        tasks = {}
        for line in out.splitlines():
            fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
            tasks[fields.get("ArrayTaskId", fields.get("JobId"))] = fields
        return tasks

    def start_when_requeued(self, task: str, timeout: float = 120) -> None:
        """SLURM holds a requeued task back about two minutes (its begin time); start it once it is pending again."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(fields["JobState"] == "PENDING" for fields in self.tasks(task).values()):
                self.run("scontrol", "update", f"JobId={task}", "StartTime=now")
                return
            time.sleep(0.3)
        raise TimeoutError(f"{task} was not requeued: {self.tasks(task)}")

    def wait(self, job: str, timeout: float = 300) -> dict[str, dict[str, str]]:
        """Wait until no task of the job is pending or running; returns their final fields."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            tasks = self.tasks(job)
            if tasks and not any(task["JobState"] in ACTIVE for task in tasks.values()):
                return tasks
            time.sleep(1)
        raise TimeoutError(f"job {job} still not done after {timeout} s: {self.tasks(job)}")

"""`python -m unet3d.cli.launch`: torchrun whose end is unet3d's, one line and one exit code whatever the rank
(issue 23, item 4)."""

from __future__ import annotations

import signal
import subprocess
import sys

from tests.conftest import wait_for_file
from unet3d.cli.launch import exit_code
from unet3d.locking import work_dir_lock


def launch(config, output_dir, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "unet3d.cli.launch", "--standalone", "--nproc_per_node", "2", "-m"]
    command += ["unet3d.cli.train", "--config_filename", str(config), "--output_dir", str(output_dir), *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_busy_work_dir_ends_every_rank_with_75_and_one_line(experiment, tmp_path):
    config = experiment("ddp_busy", n_epochs=1)
    with work_dir_lock(tmp_path / "ddp_busy"):
        run = launch(config, tmp_path)
        _, stderr = run.communicate(timeout=300)
    assert run.returncode == 75, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "in use by another unet3d run" in errors[0]
    assert "Traceback" not in stderr and "ChildFailedError" not in stderr


def test_sigterm_to_the_launcher_ends_it_with_143_and_no_traceback(experiment, tmp_path):
    config = experiment("ddp_term", n_epochs=200, mutate=lambda c: c["training"].update(batch_size=1))
    run = launch(config, tmp_path)
    log = tmp_path / "ddp_term" / "training_log.csv"
    wait_for_file(log, run)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 143, stderr
    assert "Traceback" not in stderr and "SignalException" not in stderr
    assert stderr.count("terminated (SIGTERM); rerun") == 1 and stderr.count("terminated (SIGTERM) during") == 1


def test_a_worker_killed_by_a_signal_is_reported_as_the_shell_does():
    assert exit_code(-9) == 137 and exit_code(2) == 2 and exit_code(0) == 0

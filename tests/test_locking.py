"""One run per work dir (unet3d/locking.py): the lock names its holder, is re-entrant within a process, and
refuses other processes at once until it is released."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from unet3d.errors import Busy
from unet3d.locking import LOCK_FILENAME, work_dir_lock

TRY_LOCK = """
import sys
from unet3d.errors import Busy
from unet3d.locking import work_dir_lock
try:
    with work_dir_lock(sys.argv[1], "output folder"):
        print("taken")
except Busy as error:
    print(error)
"""


def lock_from_another_process(folder: Path) -> str:
    """What another process gets when it tries to lock `folder`: 'taken', or the message of its Busy."""
    done = subprocess.run([sys.executable, "-c", TRY_LOCK, str(folder)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_lock_file_names_its_holder_and_a_missing_folder_is_created(tmp_path):
    folder = tmp_path / "new" / "work"
    with work_dir_lock(folder):
        holder = (folder / LOCK_FILENAME).read_text()
    assert holder.startswith(f"host {socket.gethostname()}, pid {os.getpid()}, since ") and holder.endswith("\n")


def test_another_process_is_refused_at_once_while_the_lock_is_held_and_takes_it_after(tmp_path):
    with work_dir_lock(tmp_path):
        refused = lock_from_another_process(tmp_path)
    assert refused.startswith(f"{tmp_path}: this output folder is in use by another unet3d run (host ")
    assert f"pid {os.getpid()}" in refused and refused.endswith("(a run that died releases it by itself)")
    assert lock_from_another_process(tmp_path) == "taken"


def test_a_process_may_lock_a_folder_it_holds_again(tmp_path):
    with work_dir_lock(tmp_path):
        with work_dir_lock(f"{tmp_path}/sub/.."):  # the same folder (a cross-validation locks its folds inside)
            pass
        assert "is in use by another unet3d run" in lock_from_another_process(tmp_path)  # the outer block holds it
    assert lock_from_another_process(tmp_path) == "taken"


def test_a_busy_work_dir_is_found_before_any_data_are_read_and_nothing_is_created(tmp_path):
    from unet3d.locking import check_not_busy

    check_not_busy(tmp_path / "new")  # no lock file: nothing to say, and nothing made
    assert not (tmp_path / "new").exists()
    held = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"from unet3d.locking import work_dir_lock\nwith work_dir_lock({str(tmp_path)!r}):\n"
            "    print('held', flush=True); import time; time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert held.stdout.readline().strip() == "held"
        with pytest.raises(Busy, match="in use by another unet3d run"):
            check_not_busy(tmp_path)
    finally:
        held.kill()
        held.wait()
    check_not_busy(tmp_path)  # a dead holder released it

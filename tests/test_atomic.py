"""Atomic file writes (unet3d/atomic.py): a file is replaced in one step or not at all."""

from __future__ import annotations

import json
import os

import pytest

from unet3d.atomic import atomic_write, atomic_write_json, atomic_write_text
from unet3d.checkpoint import save_checkpoint


def test_failed_write_keeps_previous_content_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "model.pth"
    atomic_write_text(path, "old content")

    def writer(handle):
        handle.write(b"half of the new")
        handle.flush()
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(path, writer)
    assert path.read_text() == "old content"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]


def test_failed_first_write_creates_nothing(tmp_path):
    def writer(handle):
        handle.write(b"x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(tmp_path / "new.json", writer)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def umask():
    def set_mask(mask):
        previous = os.umask(mask)
        restore.append(previous)

    restore = []
    yield set_mask
    for previous in reversed(restore):
        os.umask(previous)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_written_files_get_normal_permissions(tmp_path, umask, mask, mode):
    umask(mask)
    path = tmp_path / "model.pth"
    save_checkpoint(path, {"epoch": 1})
    text = tmp_path / "log.json"
    atomic_write_json(text, {"a": 1})
    for written in (path, text):
        assert written.stat().st_mode & 0o777 == mode
    if mask == 0o022:
        assert path.stat().st_mode & 0o044 != 0  # readable by group and others, not mkstemp's 0600


def test_atomic_helpers_write_expected_content(tmp_path):
    atomic_write_json(tmp_path / "a" / "b.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "a" / "b.json").read_text()) == {"x": [1, 2]}
    assert (tmp_path / "a" / "b.json").read_text().endswith("\n")


def test_stale_temporaries_of_interrupted_writes_are_removed(tmp_path):
    from unet3d.atomic import remove_stale_temporaries

    (tmp_path / ".model.pth.k3j2.tmp").write_bytes(b"half")
    (tmp_path / ".case.nii.gz.tmp.nii.gz").write_bytes(b"half")
    (tmp_path / "model.pth").write_bytes(b"whole")
    (tmp_path / "notes.tmp").write_bytes(b"not ours")
    (tmp_path / ".scan.mhd.tmpq81x").mkdir()  # a MetaImage header and its data, written together
    (tmp_path / ".scan.mhd.tmpq81x" / "scan.raw").write_bytes(b"half")
    removed = remove_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == [".case.nii.gz.tmp.nii.gz", ".model.pth.k3j2.tmp", ".scan.mhd.tmpq81x"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth", "notes.tmp"]


def test_duplicated_checkpoints_are_hard_links_that_survive_replacing_either(tmp_path):
    from unet3d.atomic import atomic_duplicate, atomic_write

    atomic_write(tmp_path / "model_best.pth", lambda handle: handle.write(b"epoch 3"))
    atomic_duplicate(tmp_path / "model_best.pth", tmp_path / "model.pth")
    assert (tmp_path / "model.pth").read_bytes() == b"epoch 3"
    assert os.path.samefile(tmp_path / "model.pth", tmp_path / "model_best.pth")  # written once
    atomic_write(tmp_path / "model.pth", lambda handle: handle.write(b"epoch 4"))
    assert (tmp_path / "model_best.pth").read_bytes() == b"epoch 3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pth", "model_best.pth"]


def test_duplicating_copies_where_hard_links_are_refused(tmp_path, monkeypatch):
    from unet3d.atomic import atomic_duplicate

    (tmp_path / "a.pth").write_bytes(b"state" * 1000)

    def refuse(*args, **kwargs):
        raise PermissionError("no hard links on this file system")

    monkeypatch.setattr(os, "link", refuse)
    atomic_duplicate(tmp_path / "a.pth", tmp_path / "b.pth")
    assert (tmp_path / "b.pth").read_bytes() == b"state" * 1000
    assert not os.path.samefile(tmp_path / "a.pth", tmp_path / "b.pth")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pth", "b.pth"]

"""`report.html` (unet3d/experiment/report.py): the experiment on one page, self-contained, opened in a browser."""

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import run_cli
from unet3d.experiment import report
from unet3d.experiment.run import run_experiment
from unet3d.training.options import RunOptions


def held_out_ids(work):
    return sorted(c for fold in json.loads((work / "splits.json").read_text())["folds"] for c in fold["validation"])


def test_a_cross_validation_writes_its_report(trained_cv):
    _, work, _ = trained_cv
    page = (work / "report.html").read_text()
    for case_id in held_out_ids(work):
        assert case_id in page
    for section in ("At a glance", "Cross-validation summary", "Training curves", "Held-out cases, worst first"):
        assert f"<h2>{section}</h2>" in page
    assert "Postprocessing: " in page
    assert "torch " in page and "device CPU" in page  # machine and versions from the fold's log
    assert page.count("data:image/png;base64,") == 1 + len(held_out_ids(work))  # curves + one picture per case
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing outside the file: opens from a copy, offline


def test_cases_are_sorted_worst_first_with_their_fold(trained_cv):
    _, work, _ = trained_cv
    table = report.case_table(report.runs_of(work), {})
    assert sorted(table["case_id"]) == held_out_ids(work)
    assert list(table["mean_dice"]) == sorted(table["mean_dice"])
    assert set(table["fold"]) == {"fold1", "fold2"}


def test_many_cases_picture_the_worst_and_best_with_a_note(trained_cv, monkeypatch):
    _, work, _ = trained_cv
    monkeypatch.setattr(report, "MAX_OVERLAYS", 1)
    monkeypatch.setattr(report, "SHOWN_EACH_END", 1)
    page = report.render_report(work)
    n = len(held_out_ids(work))
    assert f"{n} cases: the 1 worst and the 1 best are pictured" in page
    assert page.count("data:image/png;base64,") == 1 + 2


def test_a_copied_work_dir_gets_its_report_from_the_command(trained_cv, tmp_path):
    _, work, _ = trained_cv
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    (copy / "report.html").unlink()
    result = run_cli("report", str(copy))
    assert result.returncode == 0, result.stderr
    assert all(case_id in (copy / "report.html").read_text() for case_id in held_out_ids(work))


def test_a_report_html_that_unet3d_did_not_write_is_replaced_only_with_overwrite(trained_cv, tmp_path):
    # Issue 22: every writer goes through the output guard; the report replaced any report.html in the work dir.
    _, work, _ = trained_cv
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    page = copy / "report.html"
    page.write_text("my notes")
    kept = run_cli("report", str(copy))
    assert kept.returncode == 2 and kept.stderr.strip().splitlines() == [
        f"error: refusing to write {page} (the report): it exists and this command did not write it; choose another "
        "output, or pass --overwrite to replace it"
    ]
    assert page.read_text() == "my notes"
    assert run_cli("report", str(copy), "--overwrite").returncode == 0
    assert run_cli("report", str(copy)).returncode == 0  # its own earlier report: replaced without asking
    assert page.read_text().startswith(report.REPORT_HEAD)


def test_moved_images_and_a_removed_log_still_give_a_report_that_says_so(trained_cv, tmp_path):
    # Issue 22, item 6: after the images moved no report was written at all; a fold whose log was deleted vanished.
    _, work, _ = trained_cv
    copy = tmp_path / "copy"
    shutil.copytree(work, copy)
    (copy / "fold2" / "training_log.csv").unlink()
    config = json.loads((copy / "fold1" / "config.json").read_text())
    for case in config["validation_filenames"]:
        case["image"] = [str(tmp_path / "moved" / Path(p).name) for p in case["image"]]
    (copy / "fold1" / "config.json").write_text(json.dumps(config))
    result = run_cli("report", str(copy))
    assert result.returncode == 0, result.stderr
    page = (copy / "report.html").read_text()
    assert "fold2: no training_log.csv (not started, or the log was removed); not in this report" in page
    assert page.count("picture not drawn") == len(config["validation_filenames"])
    assert "<h2>Held-out cases, worst first</h2>" in page


def test_not_a_work_dir_is_a_one_line_error(tmp_path):
    result = run_cli("report", str(tmp_path))
    assert result.returncode == 2
    assert "not a unet3d work dir" in result.stderr and "Traceback" not in result.stderr


def test_a_single_run_writes_its_report(experiment, tmp_path):
    result = run_experiment(experiment("single", n_epochs=1), tmp_path, RunOptions(seed=1))
    page = (result.work_dir / "report.html").read_text()
    assert "no cv_summary.csv yet" in page and "Held-out cases, worst first" in page


def test_a_failing_report_never_fails_the_run(tmp_path, monkeypatch, caplog):
    def broken(work_dir):
        raise OSError("disk full")

    monkeypatch.setattr(report, "write_report", broken)
    assert report.refresh_report(tmp_path) is None
    assert "report.html not written (OSError: disk full)" in caplog.text


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (apt-get install chromium)")
def test_the_report_renders_in_a_headless_browser(trained_cv, tmp_path):
    from PIL import Image

    _, work, _ = trained_cv
    copy = tmp_path / "copied work dir"
    shutil.copytree(work, copy)
    url = (copy / "report.html").as_uri()
    browser = [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--window-size=1200,1600",
    ]
    shot = subprocess.run([*browser, f"--screenshot={tmp_path / 'shot.png'}", url], capture_output=True, timeout=120)
    assert shot.returncode == 0, shot.stderr[-2000:]
    pixels = np.asarray(Image.open(tmp_path / "shot.png").convert("L"), dtype=np.float32)
    assert pixels.shape == (1600, 1200) and pixels.std() > 10  # not a blank page
    assert (pixels < 128).mean() > 0.01  # text, tables and pictures drawn
    dom = subprocess.run([*browser, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0
    for case_id in held_out_ids(work):
        assert case_id in dom.stdout

"""The cross-validation summary (unet3d/experiment/summary.py): the CSV and the terminal table, with the self-check
notes."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.experiment.conftest import fake_work_dir
from unet3d.experiment.summary import fold_row, summarize, write_summary


def test_cv_summary_marks_the_fold_with_a_gap(tmp_path):
    fake_work_dir(tmp_path / "fold1", full_whole=0.34)
    fake_work_dir(tmp_path / "fold2", full_whole=0.90)
    assert "2+1+4: full-volume Dice 0.340" in fold_row(1, tmp_path / "fold1")["self_check"]
    table, missing = summarize(tmp_path, [1, 2])
    assert missing == []
    written = pd.read_csv(write_summary(tmp_path, table), keep_default_na=False).set_index("fold")
    assert written.loc["1", "self_check"] == "2+1+4: full-volume Dice 0.340 vs 0.910 in the training log"
    assert written.loc["2", "self_check"] == "" and written.loc["mean", "self_check"] == ""
    assert float(written.loc["mean", "dice_2+1+4"]) == pytest.approx((0.34 + 0.90) / 2)


def test_terminal_table_lists_the_notes_below_the_numbers(tmp_path):
    from unet3d.experiment.summary import format_table

    fake_work_dir(tmp_path / "fold1", full_whole=0.34)
    fake_work_dir(tmp_path / "fold2", full_whole=0.90)
    lines = format_table(summarize(tmp_path, [1, 2])[0]).splitlines()
    assert "self_check" not in lines[0]
    assert lines[-1] == "fold 1: self-check: 2+1+4: full-volume Dice 0.340 vs 0.910 in the training log"

"""The work dir described once (unet3d/workdir.py): fold naming and order, the held-out group, best-or-last, finished,
the manifest; and no other module of the package spelling these rules again."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from tests.conftest import tiny_config
from unet3d.checkpoint import LAST, Checkpoint, save_checkpoint
from unet3d.config.load import parse_config
from unet3d.config.schema import TrainingConfig
from unet3d.output_guard import WORK_DIR_FILES, WORK_DIR_MARKERS, WORK_DIR_PATTERNS
from unet3d.training.history import LOG_FILENAME
from unet3d.workdir import (
    MANIFEST,
    SPLITS_FILENAME,
    CrossValidationDir,
    RunDir,
    fold_number,
    held_out_group,
    is_finished,
)

PACKAGE = Path(__file__).resolve().parents[1] / "unet3d"


def write_checkpoint(path: Path, epoch: int, best_epoch: int = 0) -> None:
    weights = {"w": torch.zeros(1)}
    save_checkpoint(path, Checkpoint(model=weights, optimizer={}, epoch=epoch, best_epoch=best_epoch, rows=[]))


def test_fold_numbers_and_their_order_are_numeric(tmp_path):
    assert [fold_number(n) for n in ("fold1", "fold12.json", "fold", "fold_old", "fold2.jsonx", "xfold3")] == [
        1,
        12,
        None,
        None,
        None,
        None,
    ]
    for name in ("fold10", "fold2", "fold1", "fold_old", "folder"):
        (tmp_path / name).mkdir()
    (tmp_path / "fold3").write_text("a file, not a fold")
    layout = CrossValidationDir(tmp_path)
    assert [run.name for run in layout.fold_dirs()] == ["fold1", "fold2", "fold10"]
    assert layout.folds() == layout.fold_dirs()  # no fold configs: the folders there are
    for k in (2, 11):
        layout.fold_config(k).write_text("{}")
    assert [p.name for p in layout.fold_configs()] == ["fold2.json", "fold11.json"]
    assert [run.name for run in layout.folds()] == ["fold2", "fold11"]  # the configs name the folds


def test_best_model_else_last_and_the_scored_group(tmp_path):
    run = RunDir(tmp_path)
    assert not run.has_model() and run.progress().epoch == 0 and run.scored_held_out_group() is None
    write_checkpoint(run.last, epoch=4, best_epoch=3)
    assert run.model() == tmp_path / "model.pth" and run.progress().epoch == 4
    write_checkpoint(run.best, epoch=3, best_epoch=3)
    assert run.model() == tmp_path / "model_best.pth"
    run.metrics("validation").parent.mkdir()
    run.metrics("validation").write_text("case_id\n")
    assert run.scored_held_out_group() == "validation"
    run.metrics("heldout").parent.mkdir()
    run.metrics("heldout").write_text("case_id\n")
    assert run.scored_held_out_group() == "heldout"  # an inner validation split scores the held-out cases there
    assert run.read_manifest() is None
    run.manifest.write_text(json.dumps({"epoch": 3}))
    assert run.read_manifest() == {"epoch": 3}


@pytest.mark.parametrize(
    ("epoch", "best_epoch", "patience", "finished"),
    [(5, 5, None, True), (4, 4, None, False), (4, 1, 3, True), (4, 2, 3, False), (6, 6, 3, True)],
)
def test_finished_at_n_epochs_or_once_early_stopping_ended_the_run(tmp_path, epoch, best_epoch, patience, finished):
    training = TrainingConfig(n_epochs=5, early_stopping_patience=patience)
    write_checkpoint(tmp_path / "model.pth", epoch, best_epoch)
    assert RunDir(tmp_path).is_finished(training) is finished
    assert is_finished(Checkpoint(model={}, epoch=epoch, best_epoch=best_epoch), training) is finished
    assert not RunDir(tmp_path / "absent").is_finished(training)


def test_the_held_out_group_follows_the_inner_validation_split(tiny_data):
    folder, entries = tiny_data
    config = parse_config(tiny_config(entries), base=folder)
    assert held_out_group(config) == "validation"
    config.groups["heldout"] = config.groups["validation"]
    assert held_out_group(config) == "heldout"


# Spellings of the rules this module holds; another module writing one again is a second home for the rule.
ELSEWHERE = {
    r"f\"fold\{": "fold naming (f'fold{k}')",
    r"\"predictions\.json\"": "the manifest's name",
    r"\"heldout\"": "the held-out group's name",
    r"\"splits\.json\"|\"cv_summary\.csv\"": "a cross-validation file's name",
    r"ckpt\.BEST if|BEST\)\.exists\(\)": "best model, else last",
    r"== \"mean\"\]": "the metrics table's mean row",
}
ALLOWED = {
    "workdir.py": set(ELSEWHERE.values()),
    "experiment/slurm.py": {"fold naming (f'fold{k}')"},  # in bash, where the library cannot reach
    "evaluation/metrics.py": {"the metrics table's mean row"},  # the table's own reader
    "output_guard.py": {"the manifest's name", "a cross-validation file's name"},  # see the test below
}


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_other_module_spells_a_work_dir_rule_again(path):
    relative = str(path.relative_to(PACKAGE))
    text = path.read_text()
    found = [what for pattern, what in ELSEWHERE.items() if re.search(pattern, text)]
    found = [what for what in found if what not in ALLOWED.get(relative, set())]
    assert not found, f"{relative} spells {found} again; ask unet3d.workdir"


def test_the_output_guard_names_the_files_the_work_dir_holds(tmp_path):
    run = RunDir(tmp_path)
    written = {run.config.name, run.log.name, run.manifest.name, CrossValidationDir(tmp_path).splits.name}
    assert written == {"config.json", LOG_FILENAME, MANIFEST, SPLITS_FILENAME}
    assert written <= set(WORK_DIR_FILES) and {LAST, SPLITS_FILENAME} <= set(WORK_DIR_MARKERS)
    assert CrossValidationDir(tmp_path).fold_config(3).match(WORK_DIR_PATTERNS[1])

"""What a resumed run accepts from a changed config (unet3d/training/resume.py). The end-to-end refusals are in
tests/safety/test_resume_changes.py."""

from __future__ import annotations

import pytest

from unet3d.training.resume import applies_on_resume, config_changes


@pytest.mark.parametrize(
    ("key", "applied"),
    [
        ("training.n_epochs", True),
        ("training.early_stopping_patience", True),
        ("cluster.partition", True),
        ("inference.overlap", True),
        ("training.tracker_kwargs.tracking_uri", True),  # nested under an applied key (issue 22, item 5)
        ("training.n_epochs_extra", False),
        ("test_filenames", True),
        ("training.batch_size", False),
        ("training.seed", False),
        ("optimizer.lr", False),
        ("scheduler.patience", False),
        ("dataset.labels", False),
        ("training_filenames", False),
        ("validation_filenames", False),
    ],
)
def test_which_keys_a_resume_applies(key, applied):
    assert applies_on_resume(key) is applied


def test_config_changes_lists_added_removed_and_nested_keys():
    old = {"optimizer": {"name": "Adam", "lr": 0.01}, "training": {"n_epochs": 1}}
    new = {"optimizer": {"name": "Adam", "lr": 0.01, "weight_decay": 1e-5}, "training": {}}
    assert [str(c) for c in config_changes(old, new)] == [
        "optimizer.weight_decay: (not set) → 1e-05",
        "training: (not set) → {}",
        "training.n_epochs: 1 → (not set)",
    ]

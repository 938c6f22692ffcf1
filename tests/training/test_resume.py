"""What a resumed run accepts from a changed config (unet3d/training/resume.py). The end-to-end refusals are in
tests/safety/test_resume_changes.py."""

from __future__ import annotations

import pytest
import torch

from unet3d.training.resume import MISSING, Change, applies_on_resume, apply_accepted, config_changes


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


def optimizer(**kwargs):
    """An Adam on one parameter, its first epoch's rate halved by LinearLR (the rate a resume must not take as base)."""
    built = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], **kwargs)
    torch.optim.lr_scheduler.LinearLR(built, start_factor=0.5)
    return built


def test_an_accepted_change_takes_the_value_the_new_config_builds():
    restored = optimizer(lr=0.01, weight_decay=0.1)
    changes = [Change("optimizer.lr", 0.01, 0.001), Change("optimizer.weight_decay", 0.1, MISSING)]
    apply_accepted(changes, restored, optimizer(lr=0.001).param_groups)
    (group,) = restored.param_groups
    assert group["weight_decay"] == 0.0  # Adam's default, not the removed 0.1
    assert group["lr"] == group["initial_lr"] == 0.001  # the new base, not LinearLR's first-epoch 0.0005


def test_a_changed_scheduler_starts_from_the_rate_it_sets_first():
    restored = optimizer(lr=0.01)
    restored.param_groups[0]["lr"] = 0.0001  # where the old schedule had gone
    apply_accepted([Change("scheduler.start_factor", MISSING, 0.5)], restored, optimizer(lr=0.01).param_groups)
    assert restored.param_groups[0]["lr"] == 0.005 and restored.param_groups[0]["initial_lr"] == 0.01


def test_the_keys_a_resume_takes_are_marked_in_the_schema_and_none_changes_what_the_model_learns():
    from unet3d.config.schema import applied_on_resume

    assert applied_on_resume() == {
        *(f"training.{k}" for k in ("n_epochs", "early_stopping_patience", "save_best", "save_every_n_epochs")),
        "training.select_by",  # what it keeps: model_best.pth stays, later epochs are measured by the new rule
        *(f"training.{k}" for k in ("save_last_n_models", "progress_plot", "tensorboard", "tracker", "tracker_kwargs")),
        *(f"training.{k}" for k in ("log_every_n_iterations", "prefetch_factor", "test_input", "validation_interval")),
        *(f"training.{k}" for k in ("validation_batch_size", "compile", "channels_last", "deterministic", "device")),
        "training.augment_on",  # where the augmentations run: the same samples either way
        *(f"dataset.{k}" for k in ("cache", "cache_dir", "name", "verbose")),
    }
    assert applies_on_resume("training.tracker_kwargs.tracking_uri") and applies_on_resume("cluster.time")
    assert not applies_on_resume("training.batch_size") and not applies_on_resume("dataset.spacing")

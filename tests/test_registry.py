"""Tests for the closed name tables (unet3d/registry.py)."""

import builtins
import contextlib
import os
import sys

import monai.inferers
import monai.losses
import monai.networks.nets
import monai.transforms
import pytest
import torch

from unet3d.errors import ConfigError
from unet3d.registry import available, check_kwargs, lookup, suggest


@pytest.mark.parametrize(
    ("kind", "name", "expected"),
    [
        ("model", "DynUNet", monai.networks.nets.DynUNet),
        ("model", "UNet", monai.networks.nets.UNet),
        ("model", "SegResNet", monai.networks.nets.SegResNet),
        ("loss", "DiceLoss", monai.losses.DiceLoss),
        ("loss", "CrossEntropyLoss", torch.nn.CrossEntropyLoss),
        ("optimizer", "Adam", torch.optim.Adam),
        ("scheduler", "ReduceLROnPlateau", torch.optim.lr_scheduler.ReduceLROnPlateau),
        ("scheduler", "StepLR", torch.optim.lr_scheduler.StepLR),
        ("inferer", "SlidingWindowInferer", monai.inferers.SlidingWindowInferer),
        ("transform", "RandFlipD", monai.transforms.RandFlipd),
        ("transform", "RandFlipd", monai.transforms.RandFlipd),
        ("transform", "NormalizeIntensityD", monai.transforms.NormalizeIntensityd),
        ("transform", "RandSpatialCropd", monai.transforms.RandSpatialCropd),
    ],
)
def test_lookup_known_names(kind, name, expected):
    assert lookup(kind, name, f"{kind}.name") is expected


def test_monai_loss_wins_over_torch_loss_on_a_name_clash():
    # monai.losses is searched first; a torch.nn loss is only reachable when monai has no such name.
    assert lookup("loss", "DiceCELoss", "loss.name") is monai.losses.DiceCELoss
    assert lookup("loss", "MSELoss", "loss.name") is torch.nn.MSELoss


@pytest.mark.parametrize(
    ("kind", "name", "suggestion"),
    [
        ("loss", "DiceLos", "'DiceLoss'"),
        ("transform", "RandFlip", "'RandFlipd'"),
        ("model", "SegResNt", "'SegResNet'"),
        ("optimizer", "adamw", "'AdamW'"),
        ("scheduler", "ReduceLROnPlateu", "'ReduceLROnPlateau'"),
    ],
)
def test_unknown_name_lists_close_matches(kind, name, suggestion):
    with pytest.raises(ConfigError) as info:
        lookup(kind, name, f"{kind}.name")
    message = str(info.value)
    assert message.startswith(f"{kind}.name: unknown {kind} {name!r}")
    assert "did you mean" in message
    assert suggestion in message


def test_unknown_name_says_where_it_searched():
    with pytest.raises(ConfigError, match=r"searched monai\.losses, torch\.nn"):
        lookup("loss", "NoSuchLoss", "loss.name")


@pytest.mark.parametrize(
    ("kind", "name", "exists"),
    [
        ("model", "os.system", os.system),
        ("optimizer", "os.system", os.system),
        ("loss", "eval", builtins.eval),
        ("model", "eval", builtins.eval),
        ("transform", "Lambdad", monai.transforms.Lambdad),
        ("transform", "LoadImaged", monai.transforms.LoadImaged),
        ("transform", "SaveImaged", monai.transforms.SaveImaged),
        ("scheduler", "LambdaLR", torch.optim.lr_scheduler.LambdaLR),
        ("scheduler", "SequentialLR", torch.optim.lr_scheduler.SequentialLR),
        ("loss", "Module", torch.nn.Module),
        ("loss", "Conv3d", torch.nn.Conv3d),
        ("model", "Module", torch.nn.Module),
        ("inferer", "__import__", builtins.__import__),
        ("loss", "__import__", builtins.__import__),
        ("loss", "torch.nn.MSELoss", torch.nn.MSELoss),
    ],
)
def test_names_outside_the_tables_are_refused(kind, name, exists):
    assert exists is not None  # the name does reach something in Python...
    with pytest.raises(ConfigError, match=f"unknown {kind}"):
        lookup(kind, name, f"{kind}.name")  # ...but not through a config
    assert name not in available(kind)


@pytest.mark.parametrize("name", [None, 3, "", ["Adam"]])
def test_lookup_needs_a_non_empty_string(name):
    with pytest.raises(ConfigError, match=r"optimizer\.name: expected .*got"):
        lookup("optimizer", name, "optimizer.name")


def test_tables_hold_only_classes_of_the_right_kind():
    for name, cls in available("optimizer").items():
        assert issubclass(cls, torch.optim.Optimizer), name
    for name, cls in available("loss").items():
        assert issubclass(cls, torch.nn.Module), name
    for name, cls in available("transform").items():
        assert issubclass(cls, monai.transforms.MapTransform), name
    for name in available("model"):
        assert not name.startswith("_")


def test_suggest():
    assert suggest("n_epoch", ["n_epochs", "batch_size"]) == "; did you mean 'n_epochs'?"
    assert suggest("zzz", ["n_epochs", "batch_size"]) == ""
    assert "'Adam'" in suggest("adam", ["Adam", "SGD"])


# --- check_kwargs --------------------------------------------------------------------------------------------------


def test_unknown_kwarg_with_did_you_mean():
    with pytest.raises(ConfigError) as info:
        check_kwargs(torch.optim.Adam, {"lrr": 0.1}, "optimizer", supplied=("params",))
    message = str(info.value)
    assert message.startswith("optimizer.lrr: Adam has no argument 'lrr'")
    assert "did you mean 'lr'" in message


def test_kwarg_supplied_by_the_program_is_refused():
    with pytest.raises(ConfigError, match=r"optimizer\.params: is set by unet3d"):
        check_kwargs(torch.optim.Adam, {"params": [], "lr": 0.1}, "optimizer", supplied=("params",))


def test_supplied_argument_is_not_reported_missing():
    check_kwargs(torch.optim.Adam, {"lr": 0.1, "weight_decay": 1e-5}, "optimizer", supplied=("params",))
    with pytest.raises(ConfigError, match=r"optimizer: Adam needs 'params'"):
        check_kwargs(torch.optim.Adam, {"lr": 0.1}, "optimizer")


def test_missing_required_arguments_are_listed():
    with pytest.raises(ConfigError) as info:
        check_kwargs(monai.networks.nets.UNet, {"spatial_dims": 3, "channels": [4, 8]}, "model")
    message = str(info.value)
    assert message.startswith("model: UNet needs")
    for name in ("in_channels", "out_channels", "strides"):
        assert repr(name) in message
    assert "'channels'" not in message and "'spatial_dims'" not in message


def test_complete_kwargs_pass():
    check_kwargs(
        monai.networks.nets.UNet,
        {"spatial_dims": 3, "in_channels": 1, "out_channels": 2, "channels": [4, 8], "strides": [2]},
        "model",
    )
    check_kwargs(monai.losses.DiceLoss, {"sigmoid": True, "smooth_nr": 0.0}, "loss")


def test_var_kwargs_accept_any_key():
    class Flexible:
        def __init__(self, size, **options):
            pass

    check_kwargs(Flexible, {"size": 1, "anything": 2}, "x")
    with pytest.raises(ConfigError, match="x: Flexible needs 'size'"):
        check_kwargs(Flexible, {"anything": 2}, "x")


# --- a known hole ---------------------------------------------------------------------------------------------------

SIDE_EFFECT_MODULE = "unet3d_registry_probe_side_effect"


def test_inferer_kwargs_cannot_import_a_dotted_path(tmp_path, monkeypatch):
    marker = tmp_path / "imported"
    (tmp_path / f"{SIDE_EFFECT_MODULE}.py").write_text(
        f"open({str(marker)!r}, 'w').write('module code ran')\nclass Merger:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    kwargs = {"merger_cls": f"{SIDE_EFFECT_MODULE}.Merger"}
    try:
        # What training/components.build_inferer does with {"inference": {"name": "PatchInferer", ...}}.
        with contextlib.suppress(ConfigError):
            cls = lookup("inferer", "PatchInferer", "inference.name")
            check_kwargs(cls, kwargs, "inference")
            with contextlib.suppress(TypeError, ValueError):
                cls(**kwargs)
        assert not marker.exists()
    finally:
        sys.modules.pop(SIDE_EFFECT_MODULE, None)

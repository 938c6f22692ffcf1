"""Checkpoints (unet3d/checkpoint.py): full-state round trips, safe loading, model weights, warm starts."""

from pathlib import Path

import pytest
import torch
from monai.networks.nets import UNet

from tests.conftest import Payload
from unet3d.checkpoint import (
    Checkpoint,
    load_checkpoint,
    load_model_weights,
    load_pretrained,
    model_state,
    read_checkpoint,
    save_checkpoint,
)
from unet3d.errors import CheckpointError


def small_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3), torch.nn.ReLU(), torch.nn.Conv3d(2, 3, 1))


def small_unet(out_channels, seed):
    torch.manual_seed(seed)
    return UNet(spatial_dims=3, in_channels=1, out_channels=out_channels, channels=(4, 8), strides=(2,))


def assert_same(a, b):
    """Deep equality for the checkpoint value types (tensors compared by value, dtype and shape)."""
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b


# --- save / load ---------------------------------------------------------------------------------------------------


def test_round_trip(tmp_path):
    net = small_net()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    net(torch.rand(1, 1, 4, 4, 4)).sum().backward()
    optimizer.step()
    state = {
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "epoch": 7,
        "best": 0.125,
        "seed": None,
        "rows": [{"epoch": 1, "loss": 0.5, "val_loss": float("inf")}, {"epoch": 2, "loss": 0.25}],
        "config": {"training": {"n_epochs": 10}, "labels": [[1, 2], 4], "name": "UNet", "amp": False},
        "int_tensor": torch.arange(6, dtype=torch.int64).reshape(2, 3),
        "half": torch.tensor([1.5, -2.0], dtype=torch.float16),
    }
    path = tmp_path / "sub" / "model.pth"
    save_checkpoint(path, state)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pth"]
    loaded = load_checkpoint(path)
    assert_same(loaded, state)
    # The optimizer state is usable as-is.
    fresh = torch.optim.Adam(small_net().parameters(), lr=0.5)
    fresh.load_state_dict(loaded["optimizer"])
    assert fresh.param_groups[0]["lr"] == 0.01


def test_save_overwrites_previous_checkpoint(tmp_path):
    path = tmp_path / "model.pth"
    save_checkpoint(path, {"epoch": 1, "w": torch.zeros(2)})
    save_checkpoint(path, {"epoch": 2, "w": torch.ones(2)})
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 2
    assert torch.equal(loaded["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pth")


class Plain:
    def __init__(self):
        self.value = 3


def test_pickled_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.ones(1)}, "extra": Payload(marker)}, path)
    torch.load(path, weights_only=False)  # guard: an unsafe load really would run it
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CheckpointError, match=r"evil\.pth: cannot load checkpoint"):
        load_checkpoint(path)
    assert not marker.exists()


def test_pickled_custom_object_is_refused(tmp_path):
    path = tmp_path / "object.pth"
    torch.save({"epoch": 1, "thing": Plain()}, path)
    with pytest.raises(CheckpointError, match=r"object\.pth: cannot load checkpoint"):
        load_checkpoint(path)


@pytest.mark.parametrize("keep", [0, 10, 0.5])
def test_truncated_file_is_refused(tmp_path, keep):
    good = tmp_path / "good.pth"
    save_checkpoint(good, {"model": small_net().state_dict(), "epoch": 3})
    data = good.read_bytes()
    size = int(len(data) * keep) if isinstance(keep, float) else keep
    bad = tmp_path / "bad.pth"
    bad.write_bytes(data[:size])
    with pytest.raises(CheckpointError, match=r"bad\.pth: cannot load checkpoint"):
        load_checkpoint(bad)


def test_non_dict_checkpoint_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.ones(1)], path)
    with pytest.raises(CheckpointError, match="expected a dict, got list"):
        load_checkpoint(path)


def test_failed_checkpoint_save_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "model.pth"
    save_checkpoint(path, {"epoch": 1})
    with pytest.raises(Exception):  # noqa: B017 - torch refuses to pickle a lambda
        save_checkpoint(path, {"epoch": 2, "bad": lambda: None})
    assert load_checkpoint(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["model.pth"]


# --- model weights -------------------------------------------------------------------------------------------------


def test_model_state_strips_data_parallel_prefix():
    weights = small_net().state_dict()
    wrapped = {f"module.{k}": v for k, v in weights.items()}
    result = model_state({"model": wrapped, "epoch": 3, "optimizer": {"state": {}}})
    assert list(result) == list(weights)
    for key in weights:
        assert result[key] is wrapped[f"module.{key}"]


def test_model_state_accepts_a_plain_state_dict():
    weights = small_net().state_dict()
    assert model_state(dict(weights)) == dict(weights)


def test_model_state_only_strips_a_leading_prefix():
    tensor = torch.ones(1)
    assert list(model_state({"encoder.module.weight": tensor})) == ["encoder.module.weight"]


@pytest.mark.parametrize("state", [{"epoch": 3, "optimizer": {}}, {"model": {"w": [1, 2]}}, {"model": "weights"}])
def test_model_state_refuses_checkpoints_without_weights(state):
    with pytest.raises(CheckpointError, match="no model weights"):
        model_state(state)


def test_load_model_weights_exact_match():
    source, target = small_net(), small_net()
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
    load_model_weights(target, source.state_dict(), Path("src.pth"))
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value)


def test_load_model_weights_reports_shape_mismatch():
    target = small_net()
    weights = dict(target.state_dict())
    weights["2.weight"] = torch.zeros(5, 2, 1, 1, 1)
    weights["2.bias"] = torch.zeros(5)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(CheckpointError) as info:
        load_model_weights(target, weights, Path("ckpt.pth"))
    message = str(info.value)
    assert message.startswith("ckpt.pth: weights do not fit")
    assert "2 shape mismatch(es)" in message
    assert "2.bias: (5,) in the checkpoint vs (3,) in the model" in message
    for key, value in target.state_dict().items():
        assert torch.equal(value, before[key])  # nothing loaded


def test_load_model_weights_reports_missing_and_unexpected():
    target = small_net()
    weights = dict(target.state_dict())
    del weights["0.bias"]
    weights["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        load_model_weights(target, weights, Path("ckpt.pth"))
    message = str(info.value)
    assert "1 missing, e.g. 0.bias" in message
    assert "1 unexpected, e.g. extra.weight" in message


def test_load_pretrained_skips_layers_that_do_not_fit(tmp_path):
    source = small_unet(out_channels=2, seed=1)
    target = small_unet(out_channels=3, seed=2)
    initial = {k: v.clone() for k, v in target.state_dict().items()}
    path = tmp_path / "pretrained.pth"
    save_checkpoint(path, {"model": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 5})

    loaded, skipped = load_pretrained(target, path)

    own = target.state_dict()
    source_weights = source.state_dict()
    different_shape = sorted(k for k in own if own[k].shape != source_weights[k].shape)
    assert different_shape  # the final layer depends on out_channels
    assert skipped == different_shape
    assert sorted(loaded) == sorted(set(own) - set(skipped))
    assert all(name.startswith("model.2.") for name in skipped)  # only the final (output) layer
    for key in loaded:
        assert torch.equal(own[key], source_weights[key])
    for key in skipped:
        assert torch.equal(own[key], initial[key])


def test_load_pretrained_with_nothing_in_common(tmp_path):
    path = tmp_path / "other.pth"
    save_checkpoint(path, {"model": {"unrelated.weight": torch.zeros(3)}})
    with pytest.raises(CheckpointError, match="no layer matches"):
        load_pretrained(small_net(), path)


# --- the typed reader ----------------------------------------------------------------------------------------------


def test_read_checkpoint_types_a_training_state_and_round_trips_it(tmp_path):
    net = small_net()
    written = Checkpoint(
        model=net.state_dict(),
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1).state_dict(),
        epoch=3,
        best_metric=0.25,
        best_epoch=2,
        seed=11,
        rows=[{"epoch": 1, "loss": 0.5}],
        config={"training": {"n_epochs": 5}},
    )
    save_checkpoint(tmp_path / "model.pth", written)
    saved = read_checkpoint(tmp_path / "model.pth")
    assert saved.is_training_state and saved.missing == []
    assert (saved.epoch, saved.best_metric, saved.best_epoch, saved.seed) == (3, 0.25, 2, 11)
    assert saved.rows == [{"epoch": 1, "loss": 0.5}] and saved.config == {"training": {"n_epochs": 5}}
    assert saved.scheduler is None and saved.scaler is None
    assert_same(saved.model, dict(net.state_dict()))
    assert sorted(load_checkpoint(tmp_path / "model.pth")) == sorted(written.to_dict())


def test_read_checkpoint_reads_plain_weights_as_weights_without_training_state(tmp_path):
    net = small_net()
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "plain.pth")
    saved = read_checkpoint(tmp_path / "plain.pth")
    assert not saved.is_training_state and saved.missing == ["model", "optimizer", "epoch", "rows"]
    assert (saved.epoch, saved.config, saved.rows) == (0, None, [])
    assert_same(saved.model, dict(net.state_dict()))  # the DataParallel prefix is gone


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("epoch", "seven", "'epoch' is 'seven', not a number"),
        ("rows", {"epoch": 1}, "'rows' is not a list of log rows"),
        ("config", ["a"], "'config' is a list, not a dict"),
        ("model", {"w": 1}, "holds no model weights"),
    ],
)
def test_read_checkpoint_names_the_file_and_the_malformed_key(tmp_path, key, value, message):
    state = Checkpoint(model=small_net().state_dict(), optimizer={}, rows=[]).to_dict()
    state[key] = value
    torch.save(state, tmp_path / "model.pth")
    with pytest.raises(CheckpointError) as error:
        read_checkpoint(tmp_path / "model.pth")
    assert str(error.value).startswith(str(tmp_path / "model.pth")) and message in str(error.value)

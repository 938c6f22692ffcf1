"""Device choice through torch.accelerator, with the accelerator API stubbed: NPU, XPU, MPS and CUDA as torch would
report them on such machines (this machine has none), and the CPU as it is.

`npu` is no device name torch knows until torch_npu renames its privateuse1 backend, which cannot be undone in a
process (torch would then take itself for an NPU build): the NPU runtime is checked in a child process
(`npu_scenario`); in this process an NPU accelerator is a stand-in with only its type.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import typing
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from unet3d import devices
from unet3d.config.schema import TrainingConfig
from unet3d.devices import (
    DEVICE_CHOICES,
    amp_dtype,
    autocast,
    device_type,
    grad_scaler,
    process_group_backend,
)
from unet3d.errors import ConfigError, DeviceUnavailable
from unet3d.inference.predictor import Predictor
from unet3d.runtime import resolve_runtime


@pytest.fixture
def accelerator(monkeypatch):
    """install(kind, count): torch.accelerator reports `count` devices of `kind` (None: a CPU-only torch), as a CUDA,
    XPU or MPS build or a registered device plugin (torch_npu) would. Returns the device indexes set."""
    chosen: list[torch.device] = []

    def install(kind: str | None, count: int = 1) -> list[torch.device]:
        built = None if kind is None else torch.device(kind) if kind != "npu" else SimpleNamespace(type="npu")

        def current(check_available: bool = False) -> torch.device | None:
            return None if built is None or (check_available and count == 0) else built

        monkeypatch.setattr(torch.accelerator, "current_accelerator", current)
        monkeypatch.setattr(torch.accelerator, "is_available", lambda: built is not None and count > 0)
        monkeypatch.setattr(torch.accelerator, "device_count", lambda: count if built is not None else 0)
        monkeypatch.setattr(torch.accelerator, "set_device_index", chosen.append)
        return chosen

    return install


@pytest.fixture
def torchrun(monkeypatch):
    """set(rank, world_size): this process as torchrun's local rank `rank` of `world_size` on one node; the process
    group is recorded, not joined. Returns the init_process_group calls."""
    calls: list[dict] = []

    def set_world(rank: int, world_size: int) -> list[dict]:
        for name, value in (("RANK", rank), ("LOCAL_RANK", rank), ("WORLD_SIZE", world_size)):
            monkeypatch.setenv(name, str(value))
        monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
        monkeypatch.setattr(torch.distributed, "init_process_group", lambda **kwargs: calls.append(kwargs))
        return calls

    return set_world


@pytest.mark.parametrize("kind", ["cuda", "xpu", "mps"])  # npu: npu_scenario
def test_auto_takes_the_current_accelerator_and_a_named_one_is_itself(accelerator, kind):
    accelerator(kind, count=8 if kind != "mps" else 1)
    assert device_type("auto") == kind
    assert device_type(kind) == kind
    assert device_type("cpu") == "cpu"
    runtime = resolve_runtime(1, 0, pin_memory=True, device="auto")
    assert runtime.device == torch.device(kind, 0) and runtime.n_devices == 1 and not runtime.distributed
    assert runtime.pin_memory is (kind != "mps"), "torch pins no memory for MPS"
    assert resolve_runtime(0, 0, pin_memory=True).device == torch.device("cpu"), "--n_devices 0 is the CPU"


def test_auto_without_an_accelerator_runs_on_the_cpu_and_says_so(accelerator, caplog):
    accelerator(None)
    with caplog.at_level(logging.INFO, logger="unet3d"):
        runtime = resolve_runtime(1, 2, pin_memory=True)
    assert runtime.device == torch.device("cpu") and runtime.n_devices == 0 and not runtime.pin_memory
    assert f"device auto: torch {torch.__version__} has no accelerator" in caplog.text
    assert "running on the CPU" in caplog.text


@pytest.mark.parametrize(
    ("present", "count", "asked", "sees", "provider"),
    [
        (None, 0, "npu", "has no accelerator", "the torch_npu package"),
        ("cuda", 0, "cuda", "supports cuda but sees no cuda device", "a CUDA (or ROCm) build of torch"),
        ("cuda", 2, "xpu", "sees 2 cuda devices", "an XPU build of torch"),
        ("npu", 8, "mps", "sees 8 npu devices", "macOS 12.3 or later with Apple silicon"),
    ],
)
def test_a_named_device_that_is_absent_is_refused_never_replaced_by_the_cpu(
    accelerator, present, count, asked, sees, provider
):
    accelerator(present, count)
    with pytest.raises(DeviceUnavailable) as refusal:
        resolve_runtime(1, 0, pin_memory=False, device=asked)
    message = str(refusal.value)
    assert "\n" not in message
    assert message.startswith(f"device {asked!r} was asked for (--device / training.device), but torch ")
    assert sees in message and provider in message


def test_n_devices_0_with_a_named_accelerator_is_a_contradiction(accelerator):
    accelerator("npu", 8)
    with pytest.raises(
        ConfigError, match=r"--n_devices \(--ngpus\) 0 means the CPU, but the device asked for is 'npu'"
    ):
        resolve_runtime(0, 0, pin_memory=False, device="npu")


@pytest.mark.parametrize(
    ("kind", "backend"), [("cuda", "nccl"), ("npu", "hccl"), ("xpu", "xccl"), ("cpu", "gloo"), ("mps", "gloo")]
)
def test_the_process_group_backend_follows_the_device_and_can_be_overridden(kind, backend):
    assert process_group_backend(kind) == backend
    assert process_group_backend(kind, "gloo") == "gloo"


def test_under_torchrun_each_rank_takes_its_device_and_joins_with_the_device_backend(accelerator, torchrun):
    chosen = accelerator("cuda", 4)
    joined = torchrun(rank=3, world_size=4)
    runtime = resolve_runtime(4, 0, pin_memory=True, device="cuda")
    assert runtime.device == torch.device("cuda", 3) and chosen == [torch.device("cuda", 3)]
    assert runtime.distributed and runtime.rank == 3 and runtime.backend == "nccl"
    assert joined == [{"backend": "nccl"}]
    assert resolve_runtime(4, 0, pin_memory=False, device="cuda", dist_backend="gloo").backend == "gloo"
    assert joined[-1] == {"backend": "gloo"}


def npu_scenario() -> None:
    """In a child process: torch as torch_npu leaves it on an eight-card Ascend machine (privateuse1 renamed 'npu',
    torch.accelerator reporting 8 devices), this process torchrun's rank 3 of 8 with AMP. Prints what unet3d chose."""
    torch.utils.rename_privateuse1_backend("npu")
    npu = torch.device("npu")
    chosen, joined = [], []
    torch.accelerator.current_accelerator = lambda check_available=False: npu
    torch.accelerator.is_available = lambda: True
    torch.accelerator.device_count = lambda: 8
    torch.accelerator.set_device_index = lambda device: chosen.append(str(device))
    torch.distributed.is_initialized = lambda: False
    torch.distributed.init_process_group = lambda **kwargs: joined.append(kwargs)
    os.environ.update(RANK="3", LOCAL_RANK="3", WORLD_SIZE="8")
    runtime = resolve_runtime(8, 0, pin_memory=True)
    dtypes = [amp_dtype(amp, runtime.device) for amp in (True, "fp16", "bf16")]
    seen = {
        "auto": device_type("auto"),
        "named": device_type("npu"),
        "device": str(runtime.device),
        "chosen": chosen,
        "backend": runtime.backend,
        "joined": joined,
        "pin_memory": runtime.pin_memory,
        "amp": [str(dtype) for dtype in dtypes],
        "scaler": [grad_scaler(dtype, runtime.device).is_enabled() for dtype in dtypes],
    }
    print(json.dumps(seen))


def test_on_eight_npus_rank_3_takes_npu_3_joins_over_hccl_and_scales_fp16_only():
    root = Path(__file__).resolve().parents[1]
    code = "from tests.test_devices import npu_scenario; npu_scenario()"
    result = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "auto": "npu",
        "named": "npu",
        "device": "npu:3",
        "chosen": ["npu:3"],
        "backend": "hccl",
        "joined": [{"backend": "hccl"}],
        "pin_memory": True,
        "amp": ["torch.float16", "torch.float16", "torch.bfloat16"],
        "scaler": [True, True, False],
    }


def test_under_torchrun_more_ranks_than_devices_is_refused(accelerator, torchrun):
    accelerator("xpu", 2)
    torchrun(rank=2, world_size=4)
    with pytest.raises(ConfigError, match=r"local rank 2, but torch .* sees 2 xpu devices: start at most 2 processes"):
        resolve_runtime(4, 0, pin_memory=False)


def test_under_torchrun_on_the_cpu_the_backend_is_gloo(accelerator, torchrun):
    accelerator(None)
    joined = torchrun(rank=1, world_size=2)
    runtime = resolve_runtime(1, 0, pin_memory=False)
    assert runtime.device == torch.device("cpu") and runtime.backend == "gloo" and joined == [{"backend": "gloo"}]


@pytest.mark.parametrize("kind", ["cuda", "xpu", "mps"])  # npu: npu_scenario
def test_amp_dtype_and_gradient_scaler_per_device(accelerator, monkeypatch, kind):
    accelerator(kind, 1)
    device = torch.device(kind, 0)
    monkeypatch.setattr(torch.cuda.amp.common, "amp_definitely_not_available", lambda: False)  # a CUDA machine
    if hasattr(getattr(torch, kind, None), "is_bf16_supported"):  # torch.cuda and torch.xpu ask the device
        monkeypatch.setattr(getattr(torch, kind), "is_bf16_supported", lambda *args, **kwargs: True)
    assert amp_dtype(False, device) is None
    for amp, dtype, scaled in (
        (True, torch.float16, True),
        ("fp16", torch.float16, True),
        ("bf16", torch.bfloat16, False),
    ):
        assert amp_dtype(amp, device) is dtype
        scaler = grad_scaler(dtype, device)
        assert scaler.is_enabled() is scaled, "a scaler for float16 only: bfloat16 has float32's range"
        assert scaler._device == kind
    assert not grad_scaler(None, device).is_enabled()


def test_amp_is_ignored_on_the_cpu_with_a_warning_as_before(caplog):
    with caplog.at_level(logging.WARNING, logger="unet3d"):
        assert amp_dtype("bf16", torch.device("cpu")) is None
    assert "training.amp is ignored on the CPU (full precision)" in caplog.text
    scaler = grad_scaler(None, torch.device("cpu"))
    assert not scaler.is_enabled() and scaler.state_dict() == {}


def test_bf16_on_a_device_without_it_is_a_config_error(accelerator, monkeypatch):
    accelerator("xpu", 1)
    monkeypatch.setattr(torch.xpu, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.xpu, "get_device_name", lambda device=None: "Intel Arc A770", raising=False)
    with pytest.raises(ConfigError, match=r"'bf16', but this xpu device \(Intel Arc A770 \(xpu:0\)\) does not"):
        amp_dtype("bf16", torch.device("xpu", 0))
    assert amp_dtype("fp16", torch.device("xpu", 0)) is torch.float16


@pytest.mark.parametrize("kind", ["xpu", "mps"])
def test_prediction_out_of_device_memory_finishes_the_case_on_the_cpu(accelerator, monkeypatch, caplog, kind):
    accelerator(kind, 1)
    emptied = []
    monkeypatch.setattr(torch.accelerator, "empty_cache", lambda: emptied.append(True))
    tried = []

    def average(self, image, device):
        tried.append(device.type)
        if device.type != "cpu":
            raise RuntimeError(f"{kind.upper()} out of memory. Tried to allocate 2.00 GiB")
        return torch.zeros(1, 2, 4, 4, 4)

    monkeypatch.setattr(Predictor, "_average", average)
    predictor = Predictor([], None, "sigmoid", torch.device(kind, 0))
    with caplog.at_level(logging.WARNING, logger="unet3d"):
        assert predictor.probabilities(torch.zeros(1, 1, 4, 4, 4)).shape == (1, 2, 4, 4, 4)
    assert tried == [kind, "cpu"] and emptied == [True]
    assert f"out of {kind} memory for a (4, 4, 4) volume; finishing this case on the CPU" in caplog.text


def test_other_errors_and_the_cpu_get_no_fallback(monkeypatch):
    def average(self, image, device):
        raise RuntimeError("out of memory" if device.type == "cpu" else "an unrelated failure")

    monkeypatch.setattr(Predictor, "_average", average)
    for device, message in ((torch.device("cpu"), "out of memory"), (torch.device("xpu", 0), "an unrelated")):
        with pytest.raises(RuntimeError, match=message):
            Predictor([], None, "sigmoid", device).probabilities(torch.zeros(1, 1, 4, 4, 4))


def test_the_config_key_takes_the_same_devices_as_the_flag():
    hint = typing.get_type_hints(TrainingConfig)["device"]
    assert typing.get_args(hint) == DEVICE_CHOICES
    assert TrainingConfig().device == "auto"
    assert set(devices.KINDS) == set(DEVICE_CHOICES) - {"auto"}


def test_the_command_relaunches_under_torchrun_on_as_many_devices_as_asked(accelerator, monkeypatch, tmp_path):
    from unet3d.cli import train

    relaunched = []
    monkeypatch.setattr(train, "relaunch_under_torchrun", lambda n, argv: relaunched.append((n, list(argv))))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argv = ["--config_filename", str(tmp_path / "unread.json"), "--device", "npu", "--n_devices", "8"]
    args = train.build_parser().parse_args(argv)
    accelerator("npu", 8)
    train.launch_processes(args, argv, 8)
    assert relaunched == [(8, argv)]
    accelerator("npu", 4)
    with pytest.raises(ConfigError, match=r"--n_devices 8: 8 npu devices asked for, but torch .* sees 4 npu devices"):
        train.launch_processes(args, argv, 8)
    auto = train.build_parser().parse_args(["--config_filename", str(tmp_path / "unread.json"), "--ngpus", "8"])
    assert auto.n_devices == 8, "--ngpus is the old name of --n_devices"
    train.launch_processes(auto, argv, 8)  # 'auto' with fewer devices trains on one, with a warning (as before)
    assert len(relaunched) == 1


def test_mixed_precision_is_cuda_only_and_bf16_when_asked(caplog):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert amp_dtype("bf16", cuda) is torch.bfloat16
    assert amp_dtype("fp16", cuda) is torch.float16 and amp_dtype(True, cuda) is torch.float16
    assert amp_dtype(False, cuda) is None
    caplog.set_level(logging.WARNING, logger="unet3d")
    assert amp_dtype(True, cpu) is None
    assert "training.amp is ignored on the CPU" in caplog.text
    caplog.clear()
    assert amp_dtype("bf16", cpu, warn=False) is None and caplog.text == ""
    with autocast(None, cpu):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.float32
    with autocast(torch.bfloat16, cpu):
        assert torch.ones(2, 2).matmul(torch.ones(2, 2)).dtype == torch.bfloat16


def test_a_dist_backend_torch_does_not_know_is_refused():
    from unet3d.devices import check_backend

    check_backend("gloo")
    check_backend("cpu:gloo,cuda:nccl")
    with pytest.raises(ConfigError, match=r"--dist_backend: 'nonsense' is not a torch.distributed backend here"):
        check_backend("nonsense")


def test_plan_speaks_trains_device_vocabulary_without_needing_the_device(monkeypatch):
    from unet3d.devices import planned_kind

    assert [planned_kind(name) for name in ("cuda", "xpu", "cpu", "gpu")] == ["cuda", "xpu", "cpu", "cuda"]
    monkeypatch.setattr(devices, "accelerator_type", lambda: None)
    assert planned_kind("auto") == "cpu"
    monkeypatch.setattr(devices, "accelerator_type", lambda: "npu")
    assert planned_kind("auto") == "npu"
    with pytest.raises(ConfigError, match=r"^--device: expected one of auto, cpu, cuda, npu, xpu, mps, gpu, got 'tpu'"):
        planned_kind("tpu")

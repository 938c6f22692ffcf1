"""The exceptions behind the exit codes (unet3d/errors.py)."""

from __future__ import annotations

import pytest
import torch

from unet3d.errors import (
    Busy,
    CheckpointError,
    ConfigError,
    DataError,
    MachineError,
    TrainingDiverged,
    UserError,
    out_of_memory,
)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (MemoryError(), True),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
        (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"), True),
        (RuntimeError("CUDA error: an illegal memory access was encountered"), False),
        (ValueError("out of memory"), False),  # only the allocators' RuntimeErrors say it
    ],
)
def test_out_of_memory_recognises_the_allocators_errors(error, expected):
    assert out_of_memory(error) is expected


def test_input_problems_are_user_errors_and_machine_problems_are_not():
    for kind in (ConfigError, DataError, CheckpointError, TrainingDiverged):
        assert issubclass(kind, UserError), kind  # exit 2: the input is wrong, nothing was lost
    for kind in (MachineError, Busy):
        assert not issubclass(kind, UserError), kind  # exit 74 and 75: rerun once the machine allows


def test_out_of_memory_inside_a_monai_transform_is_recognised():
    # Issue 22: MONAI wraps a transform's MemoryError in "applying transform ..." (a RuntimeError); the fold was
    # reported as failed (exit 1) instead of the machine's 74.
    from monai.transforms import Compose, Lambda

    def allocate(_):
        raise MemoryError

    with pytest.raises(RuntimeError) as raised:
        Compose([Lambda(allocate)])(1)
    assert out_of_memory(raised.value)
    assert not out_of_memory(RuntimeError("applying transform <Lambda>"))

"""Every command answers `--help`, a wrong flag and an input path that does not exist without importing torch or
MONAI (issue 25, item 5): the library is imported once the work begins. The time it takes is measured in the README,
not asserted here."""

from __future__ import annotations

import subprocess
import sys

import pytest

COMMANDS = ("train", "predict", "evaluate", "plan", "export", "report")
PROBE = """
import runpy, sys
sys.argv = ["unet3d-{command}", *{args!r}]
try:
    runpy.run_module("unet3d.cli.{command}", run_name="__main__")
except SystemExit as end:
    code = end.code
heavy = sorted(name for name in ("torch", "monai", "numpy", "nibabel") if name in sys.modules)
print(code, ",".join(heavy), file=sys.stderr)
"""


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("args", [("--help",), ("--no_such_flag",)], ids=["help", "wrong_flag"])
def test_the_command_line_is_parsed_without_the_library(command, args):
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(command=command, args=list(args))], capture_output=True, text=True
    )
    code, _, heavy = done.stderr.strip().splitlines()[-1].partition(" ")
    assert code == ("0" if args == ("--help",) else "2"), done.stderr
    assert heavy == "", f"unet3d-{command} {args[0]} imported {heavy}"


MISSING = {  # each command with its input paths pointing nowhere, and the lines it must answer with
    "train": (["--config_filename", "no.json"], ["no.json: config does not exist"]),
    "predict": (
        ["--model_filename", "a.pth", "b.pth", "--input", "cases", "--output_directory", "out"],
        [
            "a.pth: checkpoint does not exist",
            "b.pth: checkpoint does not exist",
            "cases: input folder or case list does not exist",
        ],
    ),
    "evaluate": (
        ["--predictions", "preds", "--config_filename", "no.json"],
        ["preds: predictions folder does not exist", "no.json: config does not exist"],
    ),
    "plan": (["--dataset", "Dataset001", "--config_filename", "plan.json"], ["Dataset001: data set does not exist"]),
    "export": (
        ["--model_filename", "a.pth", "--output", "m.ts", "--license", "L"],
        ["a.pth: checkpoint does not exist", "L: licence file does not exist"],
    ),
    "report": (["work"], ["work: work dir does not exist"]),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_an_input_that_does_not_exist_is_answered_before_the_library_is_imported(command, tmp_path):
    args, lines = MISSING[command]
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(command=command, args=args)], capture_output=True, text=True, cwd=tmp_path
    )
    *errors, last = done.stderr.strip().splitlines()
    code, _, heavy = last.partition(" ")
    assert code == "2" and errors == [f"error: {line}" for line in lines], done.stderr
    assert heavy == "", f"unet3d-{command} with a missing input imported {heavy}"
    assert list(tmp_path.iterdir()) == []  # nothing written

"""Every command answers `--help` and a wrong flag without importing torch or MONAI (issue 25, item 5): the library
is imported once the work begins. The time it takes is measured in the README, not asserted here."""

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

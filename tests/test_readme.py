"""The README stays true: its config reference is the schema's, and its commands are the ones CI runs."""

from pathlib import Path

from unet3d.config.reference import machine_reference_markdown, reference_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_readme_config_reference_matches_the_schema():
    assert reference_markdown() in (ROOT / "README.md").read_text()
    assert machine_reference_markdown() in (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    command = 'pip install -e ".[test]" && ruff check . && python -m pytest'
    assert command in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci


def test_example_config_lists_exactly_what_make_data_writes(tmp_path):
    import json
    import subprocess
    import sys

    example = ROOT / "examples" / "brats_like"
    subprocess.run([sys.executable, str(example / "make_data.py"), "--output", str(tmp_path / "data")], check=True)
    config = json.loads((example / "brats_like_config.json").read_text())
    listed = {
        p
        for group in ("training_filenames", "test_filenames")
        for case in config[group]
        for p in [*case["image"], *([case["label"]] if "label" in case else [])]
    }
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.nii.gz")}
    assert listed == written

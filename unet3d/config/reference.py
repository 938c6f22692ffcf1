"""The README's config reference, generated from the schema's records (one row per key, with its type, default and
doc), so that the documentation cannot drift from the code (tests/test_readme.py compares them)."""

from __future__ import annotations

import typing
from dataclasses import MISSING, fields

from unet3d.config.fields import type_name
from unet3d.config.schema import (
    NAMED_SECTIONS,
    NOTE_SECTIONS,
    REQUIRED_SECTIONS,
    RESUME_APPLIED_SECTIONS,
    SECTION_RECORDS,
    MachineConfig,
)


def reference_markdown() -> str:
    """The config reference table for the README, generated from the records above."""
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for section, text in NAMED_SECTIONS.items():
        applied = " *Resume: applied.*" if section in RESUME_APPLIED_SECTIONS else ""
        lines.append(
            f"| `{section}` | object | {'required' if section in REQUIRED_SECTIONS else 'none'} | {text}{applied} |"
        )
    for section, text in NOTE_SECTIONS.items():
        lines.append(f"| `{section}` | object | none | {text} |")
    for section, record in SECTION_RECORDS.items():
        lines += _rows(record, f"{section}.")
    lines.append(
        '| `<group>_filenames` | list or path | | Cases: `{"image": path or [paths], "label": path}`; '
        "or a `.npy`/`.json` file holding such a list; or an MSD / nnU-Net v2 data set (its folder or `dataset.json`): "
        "`training_filenames` takes its training cases, other groups its test cases. |"
    )
    return "\n".join(lines)


def machine_reference_markdown() -> str:
    """The table of 3DUnetCNN's machine config keys (`--machine_config_filename`), from its record."""
    return "\n".join(["| key | type | default | meaning |", "|---|---|---|---|", *_rows(MachineConfig, "")])


def _rows(record: type, prefix: str) -> list[str]:
    hints = typing.get_type_hints(record)
    rows = []
    for f in fields(record):
        default = f.default if f.default is not MISSING else f.default_factory()
        type_text = type_name(hints[f.name]).replace("|", "/")
        applied = " *Resume: applied.*" if f.metadata.get("resume") == "applied" else ""
        rows.append(f"| `{prefix}{f.name}` | {type_text} | `{default!r}` | {f.metadata['doc']}{applied} |")
    return rows

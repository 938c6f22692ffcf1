"""The data report: the fingerprint as a table, and the cases that stand out, before any GPU time is spent.

A case stands out when one of its numbers is far from the other cases' (a robust z-score, |x - median| / (1.4826 ·
MAD, or the mean absolute deviation where most cases share one value), above OUTLIER_Z, on log scale for sizes),
when its label map is empty, or when its axes are ordered unlike most cases'. Each finding is one line naming the
case, the number and the data set's median.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from unet3d.planning.fingerprint import CaseFingerprint
from unet3d.planning.rules import AIR_HU

OUTLIER_Z = 3.5


def fingerprint_table(cases: Sequence[CaseFingerprint]) -> pd.DataFrame:
    """One row per case: shape and spacing (RAS order), orientation, foreground intensity range per channel, and the
    labelled volume in mm³."""
    rows = []
    for case in cases:
        voxel = math.prod(case.spacing)
        row = {
            "case": case.case_id,
            "shape": "x".join(str(n) for n in case.shape),
            "spacing": "x".join(f"{s:g}" for s in case.spacing),
            "orientation": case.orientation,
            "label_mm3": round(sum(case.label_voxels.values()) * voxel, 1),
        }
        for index, channel in enumerate(case.channels):
            row[f"ch{index}_p0.5"] = round(channel.p00_5, 2)
            row[f"ch{index}_p99.5"] = round(channel.p99_5, 2)
        rows.append(row)
    return pd.DataFrame(rows)


def _robust_outliers(values: np.ndarray) -> np.ndarray:
    median = np.median(values)
    deviation = np.abs(values - median)
    # When most cases share one value the MAD is 0; the mean absolute deviation still measures the others' spread.
    scale = 1.4826 * (np.median(deviation) or deviation.mean())
    return deviation / scale > OUTLIER_Z if scale > 0 else np.zeros(values.shape, dtype=bool)


def outliers(cases: Sequence[CaseFingerprint], fixed_scale_channels: Sequence[int] = ()) -> list[str]:
    """One line per finding, e.g. 'case_007: spacing of axis 2 is 5 mm; the median case has 1 mm'. Intensities are
    compared only for `fixed_scale_channels` (CT: Hounsfield units mean the same in every scan); MR intensities have
    an arbitrary scale per scan, which the per-case normalization removes."""
    findings = mixed_kinds(cases)
    if len(cases) < 3:
        return findings

    def check(what: str, value: Callable[[CaseFingerprint], float], unit: str, log: bool = False) -> None:
        values = np.array([value(c) for c in cases], dtype=np.float64)
        scaled = np.log(np.maximum(values, 1e-9)) if log else values
        for case, flagged, raw in zip(cases, _robust_outliers(scaled), values, strict=True):
            if flagged:
                findings.append(
                    f"{case.case_id}: {what} is {raw:.4g}{unit}; the median case has {np.median(values):.4g}{unit}"
                )

    for axis in range(len(cases[0].spacing)):
        check(f"spacing of axis {axis}", lambda c, a=axis: c.spacing[a], " mm", log=True)
    for axis in range(len(cases[0].shape)):  # a thin slab or a small field of view beside whole scans
        check(f"extent of axis {axis}", lambda c, a=axis: c.shape[a] * c.spacing[a], " mm", log=True)
    labelled = [c for c in cases if c.label_voxels]
    if len(labelled) >= 3:
        check("labelled volume", lambda c: sum(c.label_voxels.values()) * math.prod(c.spacing) + 1e-9, " mm³", True)
    for index in fixed_scale_channels:
        check(f"channel {index} foreground 99.5th percentile", lambda c, i=index: c.channels[i].p99_5, "")
        check(f"channel {index} foreground 0.5th percentile", lambda c, i=index: c.channels[i].p00_5, "")
    findings.extend(f"{c.case_id}: label map is empty (no foreground)" for c in cases if not c.label_voxels)
    orders = Counter(c.orientation for c in cases).most_common()
    if len(orders) > 1 and orders[0][1] > len(cases) / 2:
        findings.extend(
            f"{c.case_id}: axes ordered {c.orientation}, most cases {orders[0][0]} (all are reoriented to RAS)"
            for c in cases
            if c.orientation != orders[0][0]
        )
    elif len(orders) > 1:
        counts = ", ".join(f"{order} {n}" for order, n in orders)
        findings.append(f"axes are ordered {len(orders)} ways ({counts}); all are reoriented to RAS")
    return findings


def mixed_kinds(cases: Sequence[CaseFingerprint]) -> list[str]:
    """Scans whose intensity profile differs from the rest in a channel: Hounsfield-unit air (CT) in some cases and
    not in others, named whichever side is smaller."""
    findings = []
    for index in range(len(cases[0].channels)):
        air = [c for c in cases if c.channels[index].image_p00_5 < AIR_HU]
        other = [c for c in cases if c.channels[index].image_p00_5 >= AIR_HU]
        if air and other:
            few, kind = (air, "has Hounsfield-unit air (CT)") if len(air) <= len(other) else (other, "has no air")
            findings.extend(
                f"{c.case_id}: channel {index} {kind}, unlike {len(cases) - len(few)} of {len(cases)} cases "
                f"(darkest voxels {c.channels[index].image_p00_5:.0f}): a scan of another kind?"
                for c in few
            )
    return findings


def label_volumes(cases: Sequence[CaseFingerprint]) -> list[str]:
    """The spread of each label value's volume over the cases that hold it, in mm³."""
    lines = []
    for value in sorted({int(v) for c in cases for v in c.label_voxels}):
        volumes = [c.label_voxels[str(value)] * math.prod(c.spacing) for c in cases if str(value) in c.label_voxels]
        lines.append(
            f"label {value}: {min(volumes):,.0f} to {max(volumes):,.0f} mm³ (median {np.median(volumes):,.0f}) in "
            f"{len(volumes)} of {len(cases)} cases"
        )
    return lines


def render(cases: Sequence[CaseFingerprint], rules: dict[str, str], fixed_scale_channels: Sequence[int] = ()) -> str:
    """The report as text: the table, the findings, and the planner's reasons."""
    with pd.option_context("display.max_rows", 500, "display.max_columns", 50, "display.width", 200):
        table = fingerprint_table(cases).to_string(index=False)
    found = outliers(cases, fixed_scale_channels)
    lines = [f"{len(cases)} cases", table, ""]
    if found:
        lines.append(f"{len(found)} finding(s):")
    elif len(cases) < 3:
        lines.append(f"{len(cases)} cases: too few to compare them with each other")
    else:
        lines.append("no case stands out")
    lines.extend(f"  {line}" for line in found)
    lines += ["", "labelled volumes:", *(f"  {line}" for line in label_volumes(cases))]
    lines.append("")
    lines.append("planned:")
    lines.extend(f"  {key}: {reason}" for key, reason in rules.items())
    return "\n".join(lines) + "\n"

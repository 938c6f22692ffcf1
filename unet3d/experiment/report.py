"""`report.html`: a whole experiment on one page that opens from a copied work dir, offline, without a server.

Written (and rewritten) at the end of every cross-validation and single run, and by `unet3d-report WORK_DIR`. One
self-contained HTML file, its pictures embedded as PNG data: the experiment at a glance (config, cases, folds, epochs,
training time, machine, versions), the cross-validation summary and the postprocessing decision, the training curves
of every fold on shared axes, the held-out cases sorted worst first with their fold, Dice and HD95 per region and
self-check flags, and overlay pictures of the cases (all of them when there are at most MAX_OVERLAYS, otherwise the
worst and best few, with a note). Pictures need matplotlib (`unet3d[plots]`); without it the page says so and keeps
its tables.
"""

from __future__ import annotations

import base64
import html
import importlib.util
import io
import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from unet3d.atomic import atomic_write_text
from unet3d.config.cases import find_label_map
from unet3d.config.load import load_config
from unet3d.data.image_io import read_aligned, read_array, read_header
from unet3d.evaluation.metrics import read_metrics
from unet3d.evaluation.overlays import overlay_figure
from unet3d.output_guard import Inputs, check_outputs
from unet3d.training.history import LOG_FILENAME, read_log
from unet3d.training.loop import CONFIG_FILENAME
from unet3d.training.plots import fold_curves_figure
from unet3d.workdir import CrossValidationDir, RunDir

log = logging.getLogger("unet3d")
REPORT_FILENAME = "report.html"
REPORT_HEAD = '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>'  # how every report begins
MAX_OVERLAYS = 12
SHOWN_EACH_END = 4  # worst and best cases pictured when there are more than MAX_OVERLAYS
STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1400px; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; max-width: 100%; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: right; }
th { overflow-wrap: anywhere; } /* long region columns (dice_2+1+4) wrap instead of widening the page */
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
.flag { color: #b71c1c; } .note { color: #555; font-size: 0.9em; } img { max-width: 100%; }
"""


def runs_of(work_dir: Path) -> dict[str, Path]:
    """The runs of a work dir: its fold folders that have a training log, or the work dir itself for a single run."""
    runs = {run.name: run.path for run in CrossValidationDir(work_dir).fold_dirs() if run.log.exists()}
    if not runs and RunDir(work_dir).log.exists():
        runs = {work_dir.name: work_dir}
    return runs


def case_table(runs: dict[str, Path], flags: dict[str, str]) -> pd.DataFrame:
    """Every held-out case of every run: run, case, Dice and HD95 per region, mean Dice, the run's self-check flag;
    sorted worst (lowest mean Dice) first."""
    tables = []
    for name, run_dir in runs.items():
        group = RunDir(run_dir).scored_held_out_group()
        if group is None:
            continue
        table = read_metrics(RunDir(run_dir).metrics(group)).cases.copy()
        dice = [c for c in table.columns if c.startswith("dice_")]
        table.insert(0, "fold", name)
        table["mean_dice"] = table[dice].mean(axis=1)
        table["group"] = group
        table["self_check"] = flags.get(name, "")
        tables.append(table)
    if not tables:
        return pd.DataFrame()
    return pd.concat(tables, ignore_index=True).sort_values("mean_dice", kind="stable").reset_index(drop=True)


def _png(figure: Any) -> str:
    from matplotlib import pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=72)
    plt.close(figure)
    return f'<img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}" alt="">'


def _overlay(run_dir: Path, row: pd.Series) -> str:
    """The overlay picture of one held-out case, or a note saying why there is none (the report is written without
    the pictures it cannot draw: moved images, an unreadable config)."""
    try:
        return _draw_overlay(run_dir, row)
    except Exception as error:  # a picture is a by-product: the rest of the report still says what happened
        reason = html.escape(f"{type(error).__name__}: {error}")
        return f'<p class="note">{html.escape(row["case_id"])}: picture not drawn ({reason})</p>'


def _draw_overlay(run_dir: Path, row: pd.Series) -> str:
    config = load_config(run_dir / CONFIG_FILENAME)
    cases = {c.case_id: c for group in config.groups.values() for c in group}
    case = cases.get(row["case_id"])
    prediction = find_label_map(run_dir / row["group"], row["case_id"])
    if case is None or case.label is None or prediction is None:
        return f'<p class="note">{html.escape(row["case_id"])}: image, label or prediction not found</p>'
    header = read_header(prediction)
    image = np.asarray(read_array(case.images[0]), dtype=np.float32)
    spatial = len(header.shape) if len(header.shape) <= 3 else 3
    image = image[..., 0] if image.ndim > spatial else image  # the first channel (4D files, RGB pictures)
    truth = read_aligned(case.label, header) if spatial == 3 else read_array(case.label)
    title = f"{row['case_id']} ({row['fold']}): mean Dice {row['mean_dice']:.3f}; truth solid, prediction dashed"
    return _png(overlay_figure(image, np.asarray(truth), np.asarray(read_array(prediction)), header.spacing, title))


def _glance(work_dir: Path, runs: dict[str, Path], cases: pd.DataFrame) -> str:
    logs = {name: read_log(RunDir(d).log) for name, d in runs.items()}
    banner = ""
    first = next(iter(runs.values()), None)
    if first is not None and (first / "train.log").exists():
        banner = next(
            (
                line.split(" INFO ", 1)[-1]
                for line in (first / "train.log").read_text().splitlines()
                if " | torch " in line
            ),
            "",
        )
    splits = CrossValidationDir(work_dir).splits
    n_cases = sum(len(f["validation"]) for f in json.loads(splits.read_text())["folds"]) if splits.exists() else None
    items = {
        "config": work_dir.name,
        "cases": n_cases if n_cases is not None else len(cases),
        "folds" if len(runs) > 1 else "runs": len(runs),
        "epochs": ", ".join(f"{n}: {int(lg['epoch'].max())}" for n, lg in logs.items() if not lg.empty),
        "training time": f"{sum(float(lg['epoch_time'].sum()) for lg in logs.values() if 'epoch_time' in lg):.0f} s",
        "machine and versions": banner or "not recorded",
        "report written": datetime.now().isoformat(timespec="seconds"),
    }
    rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in items.items())
    return f"<table>{rows}</table>"


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.4f}"


def _postprocessing(path: Path) -> str:
    """The postprocessing decision in a sentence."""
    if not path.exists():
        return '<p class="note">no postprocessing decision yet (it is made once every fold has finished)</p>'
    decision = json.loads(path.read_text())
    regions = decision.get("keep_largest_component") or []
    what = f"largest connected component kept for regions {', '.join(map(str, regions))}" if regions else "none"
    before, after = decision.get("mean_dice_before"), decision.get("mean_dice_after")
    scores = (
        f" (cross-validated mean Dice {before:.4f} → {after:.4f})" if before is not None and after is not None else ""
    )
    return f"<p>Postprocessing: {html.escape(what)}{scores}.</p>"


def render_report(work_dir: Path) -> str:
    """The report's HTML for a work dir (cross-validation or single run)."""
    work_dir = Path(work_dir)
    runs = runs_of(work_dir)
    layout = CrossValidationDir(work_dir)
    summary = pd.read_csv(layout.summary, dtype={"fold": str}) if layout.summary.exists() else None
    flags = {}
    if summary is not None and "self_check" in summary:
        flags = {
            layout.fold(int(row["fold"])).name: str(row["self_check"])
            for _, row in summary.iterrows()
            if str(row["fold"]).isdigit() and isinstance(row["self_check"], str)
        }
    cases = case_table(runs, flags)
    plots = importlib.util.find_spec("matplotlib") is not None
    parts = [f"<h1>{html.escape(work_dir.name)}</h1>", "<h2>At a glance</h2>", _glance(work_dir, runs, cases)]
    unlogged = [run.name for run in layout.fold_dirs() if run.name not in runs]
    if unlogged:
        parts.append(
            f'<p class="note">{html.escape(", ".join(unlogged))}: no {LOG_FILENAME} (not started, or the log was '
            "removed); not in this report</p>"
        )
    parts.append("<h2>Cross-validation summary</h2>")
    parts.append(
        summary.to_html(index=False, float_format=_number, na_rep="")
        if summary is not None
        else '<p class="note">no cv_summary.csv yet (a single run, or folds still running)</p>'
    )
    parts.append(_postprocessing(layout.postprocessing))
    if not plots:
        parts.append("<p class=\"note\">pictures need matplotlib: pip install 'unet3d[plots]'</p>")
    else:
        import matplotlib

        matplotlib.use("Agg")
        parts += [
            "<h2>Training curves</h2>",
            _png(fold_curves_figure({n: read_log(RunDir(d).log) for n, d in runs.items()})),
        ]
    parts.append("<h2>Held-out cases, worst first</h2>")
    shown = [c for c in cases.columns if c not in ("group",)]
    parts.append(
        cases[shown].to_html(index=False, float_format=_number, na_rep="")
        if not cases.empty
        else '<p class="note">no held-out case is scored yet</p>'
    )
    if plots and not cases.empty:
        parts.append("<h2>Pictures</h2>")
        picked = cases
        if len(cases) > MAX_OVERLAYS:
            picked = pd.concat([cases.head(SHOWN_EACH_END), cases.tail(SHOWN_EACH_END)])
            parts.append(
                f'<p class="note">{len(cases)} cases: the {SHOWN_EACH_END} worst and the {SHOWN_EACH_END} '
                "best are pictured</p>"
            )
        for _, row in picked.iterrows():
            parts.append(_overlay(runs[row["fold"]], row))
    body = "\n".join(parts)
    return (
        f"{REPORT_HEAD}{html.escape(work_dir.name)}</title>"
        f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )


def write_report(work_dir: Path, overwrite: bool = False) -> Path:
    """Write `<work dir>/report.html` (atomically) and return its path. An earlier report is replaced; any other
    file of that name only with `overwrite` (see `unet3d.output_guard`)."""
    path = Path(work_dir) / REPORT_FILENAME
    check_outputs({path: "the report"}, Inputs(), replace=overwrite, made_here=_is_report)
    atomic_write_text(path, render_report(Path(work_dir)))
    return path


def _is_report(path: Path) -> bool:
    """Whether `path` is a report unet3d wrote (it begins as every report does)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as page:
            return page.read(len(REPORT_HEAD)) == REPORT_HEAD
    except OSError:
        return False


def refresh_report(work_dir: Path) -> Path | None:
    """Rewrite the report after a run; a failure is logged as a warning and never fails the run it describes."""
    try:
        path = write_report(work_dir)
    except Exception as error:  # the report is a by-product: a finished run stays finished
        log.warning(
            "report.html not written (%s: %s); run unet3d-report %s to retry", type(error).__name__, error, work_dir
        )
        return None
    log.info("report: %s", path)
    return path

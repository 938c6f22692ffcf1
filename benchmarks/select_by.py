"""Which `training.select_by` rule picks the model that scores best on the held-out cases? One training per fold
decides it for every rule: the rules change which epoch is kept, not how the network learns (with a scheduler that
does not follow the rule: the planned configs use PolynomialLR).

Train a cross-validation with every epoch's checkpoint kept (`--set training.save_every_n_epochs=1`), then:

    python benchmarks/select_by.py WORK_DIR [--folds 1 2] [--out benchmarks/results/select_by.md]

For each fold and rule it takes the epoch the rule picks from the fold's training log, predicts the fold's held-out
cases with that epoch's checkpoint (full volumes, each case's original space) and prints the Dice per region: the
table the planner's default is chosen by.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import pandas as pd
import torch

from unet3d import checkpoint as ckpt
from unet3d.prediction import predict
from unet3d.training.history import read_log
from unet3d.training.selection import SELECT_BY, best_row, selection_for
from unet3d.workdir import CrossValidationDir


def rule_rows(work_dir: Path, folds: list[int], scratch: Path) -> list[dict]:
    layout = CrossValidationDir(work_dir)
    rows = []
    for k in folds:
        run = layout.fold(k)
        log = read_log(run.log).to_dict("records")
        for rule in SELECT_BY:
            epoch = int(best_row(log, selection_for(rule, True))["epoch"])
            model = run.path / ckpt.epoch_filename(epoch)
            if not model.exists():
                raise SystemExit(f"{model} is missing: train with --set training.save_every_n_epochs=1")
            started = time.perf_counter()
            result = predict(
                scratch / f"fold{k}_{rule}",
                model_filenames=[model],
                config_filename=layout.fold_config(k),
                group="validation",
                device="cpu",
                use_postprocessing=False,
            )
            cases = result.metrics  # one row per held-out case
            dice = {c.removeprefix("dice_"): float(cases[c].mean()) for c in cases.columns if c.startswith("dice_")}
            rows.append(
                {
                    "fold": k,
                    "select_by": rule,
                    "epoch": epoch,
                    **{f"dice {name}": value for name, value in dice.items()},
                    "mean Dice": sum(dice.values()) / len(dice),
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
            print(rows[-1], flush=True)
    return rows


def markdown(table: pd.DataFrame) -> str:
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("--folds", type=int, nargs="+", default=None)
    parser.add_argument("--scratch", type=Path, default=Path("/tmp/select_by_predictions"))
    parser.add_argument("--out", type=Path, default=None, help="also write the table as markdown")
    args = parser.parse_args()
    folds = args.folds or [int(p.stem[4:]) for p in CrossValidationDir(args.work_dir).fold_configs()]
    table = pd.DataFrame(rule_rows(args.work_dir, folds, args.scratch))
    text = "\n".join(
        [
            f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch "
            f"{torch.__version__}. Work dir: {args.work_dir}.",
            "",
            markdown(table),
        ]
    )
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()

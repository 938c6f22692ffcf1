"""nnU-Net vs unet3d at an equal budget, on the same synthetic BraTS-like cases, folds and scorer.

    python benchmarks/nnunet_parity.py --work /tmp/parity --nnunet_python /path/to/nnunet-venv/bin/python

The data set: 12 cases with nested regions (whole tumour ⊃ core ⊃ enhancing), four modalities, non-zero
backgrounds, flipped axes and anisotropic voxels, 32-40 voxels per axis, so smaller than the 40³ patch along some
axes; the enhancing tumour covers 36-108 voxels. It is written once in nnU-Net v2's raw layout; unet3d reads that
same folder (`training_filenames` names it), so both tools train on the same files. The folds are drawn once here and
given to both (nnU-Net's `splits_final.json`, unet3d's `splits.json`).

The methods (`--methods`, any of):
  nnunet       nnU-Net v2's own plan and default trainer (`nnUNetv2_plan_and_preprocess`, `nnUNetv2_train`), with
               the plan's patch and batch set to the budget's and the budget set by a trainer subclass
               (`parity/nnunet_trainer/`, found through `nnUNet_extTrainer`).
  recipe       unet3d's `examples/nnunet_style` recipe as shipped, with the budget's patch size.
  equal_width  the recipe with nnU-Net's widths (32-256 filters, as nnU-Net plans for these cases).
Each `--set KEY=VALUE` is passed to the unet3d runs (`unet3d-train --set`), and `--tag` names such a variant.

Every method trains each fold for `--epochs` x `--iterations` batches of `--batch` patches of `--patch`³ voxels on the
CPU (loader in the training process, test-time mirroring off, Gaussian sliding windows with 50% overlap), predicts
its held-out cases as label maps in each case's original geometry, and is scored here from those files, by one
function. Results go to `WORK/results/<method>.json` (kept between invocations, so one method can be rerun alone)
and the table of all of them is printed. nnU-Net must be installed in its own virtual environment (see
benchmarks/README.md); the unet3d runs use this interpreter.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import KFold

from unet3d.atomic import atomic_write_json
from unet3d.data.synthetic_layouts import write_nnunet_dataset
from unet3d.experiment.splits import splits_document
from unet3d.workdir import SPLITS_FILENAME

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "nnunet_style" / "nnunet_style_config.json"
TRAINER_DIR = Path(__file__).resolve().parent / "parity" / "nnunet_trainer"
DATASET = "Dataset501_Parity"
REGIONS = {"whole": (1, 2, 3), "core": (2, 3), "enhancing": (3,)}
EQUAL_WIDTH = {"filters": [32, 64, 128, 256]}


def prepare(
    work: Path, n_cases: int, n_folds: int, seed: int, shapes: tuple[int, int] = (32, 40)
) -> tuple[Path, list[list[str]]]:
    """Writes the data set (once per work folder: another seed or shape range is refused there) and returns its
    folder and the held-out case ids of each fold."""
    raw = work / "nnUNet_raw" / DATASET
    settings = {"cases": n_cases, "seed": seed, "shapes": list(shapes)}
    recorded = work / "data_settings.json"
    if recorded.exists() and json.loads(recorded.read_text()) != settings:
        sys.exit(f"{work} holds a data set written with {recorded.read_text()}; use another --work for {settings}")
    if not (raw / "dataset.json").exists():
        write_nnunet_dataset(
            raw, n_cases, seed=seed, shape_range=shapes, background_range=(-300.0, 300.0), regions=True
        )
        recorded.write_text(json.dumps(settings))
    cases = sorted(p.name.removesuffix(".nii.gz") for p in (raw / "labelsTr").glob("*.nii.gz"))
    folds = KFold(n_folds, shuffle=True, random_state=seed).split(cases)
    return raw, [[cases[i] for i in sorted(held)] for _, held in folds]


def run_logged(command: list[str], env: dict[str, str] | None, log: Path) -> float:
    """Runs `command` with its output in `log`; returns its wall time in seconds, or exits naming the log."""
    start = time.perf_counter()
    with open(log, "a") as out:
        done = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:3])} ... failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - start


def run_nnunet(work: Path, python: Path, held_out: list[list[str]], args: argparse.Namespace) -> dict[str, Any]:
    """Plans, preprocesses and trains every fold with nnU-Net; returns its timings and where its label maps are."""
    bin_dir = python.parent
    env = {
        **os.environ,
        "nnUNet_raw": str(work / "nnUNet_raw"),
        "nnUNet_preprocessed": str(work / "nnUNet_preprocessed"),
        "nnUNet_results": str(work / "nnUNet_results"),
        "nnUNet_extTrainer": str(TRAINER_DIR),
        "nnUNet_compile": "f",
        "PARITY_EPOCHS": str(args.epochs),
        "PARITY_ITERATIONS": str(args.iterations),
        "PARITY_VAL_ITERATIONS": str(args.val_iterations),
    }
    log = work / "nnunet.log"
    dataset_id = DATASET.split("_")[0].removeprefix("Dataset")
    # nnU-Net 2.8.1's planning crashes with nnUNet_n_proc_DA=0, so it plans with workers and trains without.
    preprocess_s = run_logged(
        [str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", dataset_id, "-c", "3d_fullres", "-np", "2"],
        {k: v for k, v in env.items() if k != "nnUNet_n_proc_DA"},
        log,
    )
    preprocessed = work / "nnUNet_preprocessed" / DATASET
    plans_path = preprocessed / "nnUNetPlans.json"
    plans = json.loads(plans_path.read_text())
    configuration = plans["configurations"]["3d_fullres"]
    architecture = configuration["architecture"]["arch_kwargs"]
    strides = np.prod(np.asarray(architecture["strides"]), axis=0)
    if any(args.patch % int(s) for s in strides):
        sys.exit(f"nnU-Net planned total strides {strides.tolist()}: a {args.patch}³ patch does not divide")
    planned = {"patch_size": configuration["patch_size"], "batch_size": configuration["batch_size"]}
    configuration["patch_size"] = [args.patch] * 3
    configuration["batch_size"] = args.batch
    plans_path.write_text(json.dumps(plans, indent=2))
    splits = [{"train": [c for fold in held_out for c in fold if c not in held], "val": held} for held in held_out]
    (preprocessed / "splits_final.json").write_text(json.dumps(splits, indent=2))

    train_env = {**env, "nnUNet_n_proc_DA": "0"}
    fold_s = []
    for fold in range(len(held_out)):
        command = [str(bin_dir / "nnUNetv2_train"), dataset_id, "3d_fullres", str(fold), "-tr", "nnUNetTrainerParity"]
        fold_s.append(run_logged([*command, "-device", "cpu"], train_env, log))
    results = work / "nnUNet_results" / DATASET / "nnUNetTrainerParity__nnUNetPlans__3d_fullres"
    probe = (
        "import sys, torch; c = torch.load(sys.argv[1], map_location='cpu', weights_only=False); "
        "g = c['logging']; w = {t.data_ptr(): t for t in c['network_weights'].values()}; "
        "print(sum(t.numel() for t in w.values()), "
        "sum(e - s for s, e in zip(g['epoch_start_timestamps'], g['epoch_end_timestamps'])))"
    )
    n_parameters, epoch_s = 0, 0.0
    for fold in range(len(held_out)):
        checkpoint = results / f"fold_{fold}" / "checkpoint_final.pth"
        out = subprocess.run([str(python), "-c", probe, str(checkpoint)], capture_output=True, text=True, check=True)
        count, seconds = out.stdout.split()
        n_parameters, epoch_s = int(count), epoch_s + float(seconds)
    return {
        "label": f"nnU-Net 2.8.1, its own plan ({'-'.join(map(str, _widths(architecture)))} filters)",
        "preprocess_s": preprocess_s,
        "wall_s": sum(fold_s),
        "epoch_s": epoch_s,
        "n_parameters": n_parameters,
        "planned": planned,
        "predictions": [str(results / f"fold_{fold}" / "validation") for fold in range(len(held_out))],
    }


def _widths(architecture: dict[str, Any]) -> list[int]:
    widths = architecture["features_per_stage"]
    return [widths[0], widths[-1]]


def unet3d_config(raw: Path, n_folds: int, args: argparse.Namespace, width: dict[str, Any] | None) -> dict[str, Any]:
    """The recipe's config for this data set and budget: its cases are the nnU-Net folder, labelled 1/2/3."""
    config = json.loads(RECIPE.read_text())
    config["training_filenames"] = str(raw)
    config["dataset"]["labels"] = [1, 2, 3]
    config["dataset"]["setup_label_hierarchy"] = True
    patch = [args.patch] * 3
    for transform in config["dataset"]["training"]["spatial_augmentations"]:
        if "spatial_size" in transform:
            transform["spatial_size"] = patch
    config["inference"]["roi_size"] = patch
    config["cross_validation"]["n_folds"] = n_folds
    training = config["training"]
    training.update(n_epochs=args.epochs, iterations_per_epoch=args.iterations, batch_size=args.batch)
    if config["scheduler"].get("step") == "iteration":
        config["scheduler"]["total_iters"] = args.epochs * args.iterations
    if width:
        config["model"].update(width)
    return config


def run_unet3d(
    work: Path, raw: Path, held_out: list[list[str]], args: argparse.Namespace, method: str
) -> dict[str, Any]:
    """Trains, predicts and scores every fold with `unet3d-train`; returns its timings and label-map folders."""
    folder = work / f"unet3d_{method}"
    folder.mkdir(parents=True, exist_ok=True)
    config = unet3d_config(raw, len(held_out), args, EQUAL_WIDTH if method.startswith("equal_width") else None)
    config_path = folder / "parity.json"
    config_path.write_text(json.dumps(config, indent=2))
    work_dir = folder / "parity"
    work_dir.mkdir(exist_ok=True)
    everyone = [c for fold in held_out for c in fold]
    document = splits_document(held_out, everyone, len(held_out), args.seed, stratify=None)
    atomic_write_json(work_dir / SPLITS_FILENAME, document)  # unet3d-train reuses an existing split
    command = [sys.executable, "-m", "unet3d.cli.train", "--config_filename", str(config_path), "--nthreads", "0"]
    for item in args.set:
        command += ["--set", item]
    wall_s = run_logged(command, None, folder / "unet3d.log")
    epoch_s = 0.0
    for k in range(1, len(held_out) + 1):
        epoch_s += float(pd.read_csv(work_dir / f"fold{k}" / "training_log.csv")["epoch_time"].sum())
    state = torch.load(work_dir / "fold1" / "model.pth", map_location="cpu", weights_only=True)["model"]
    filters = config["model"]["filters"]
    return {
        "label": f"unet3d {method} ({config['model']['name']} {filters[0]}-{filters[-1]} filters)",
        "wall_s": wall_s,
        "epoch_s": epoch_s,
        "n_parameters": int(sum(v.numel() for v in {v.data_ptr(): v for v in state.values()}.values())),
        "overrides": args.set,
        "predictions": [str(work_dir / f"fold{k}" / "validation") for k in range(1, len(held_out) + 1)],
    }


def region_dice(truth: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """Dice of each BraTS region (1 when both are empty)."""
    out = {}
    for name, values in REGIONS.items():
        t, p = np.isin(truth, values), np.isin(prediction, values)
        denominator = t.sum() + p.sum()
        out[name] = 1.0 if denominator == 0 else float(2 * np.logical_and(t, p).sum() / denominator)
    return out


def score(raw: Path, held_out: list[list[str]], prediction_dirs: list[str]) -> pd.DataFrame:
    """One row per held-out case: its fold and region Dice, read from the written label maps on the truth's grid."""
    rows = []
    for fold, (cases, folder) in enumerate(zip(held_out, prediction_dirs, strict=True), start=1):
        for case in cases:
            truth = nib.load(raw / "labelsTr" / f"{case}.nii.gz")
            predicted = nib.load(Path(folder) / f"{case}.nii.gz")
            if truth.shape != predicted.shape or not np.allclose(truth.affine, predicted.affine, atol=1e-4):
                sys.exit(f"{folder}/{case}.nii.gz is not on its case's grid ({predicted.shape} vs {truth.shape})")
            dice = region_dice(np.asarray(truth.dataobj), np.rint(np.asarray(predicted.dataobj)).astype(int))
            rows.append({"case": case, "fold": fold, **dice})
    return pd.DataFrame(rows)


def table(results: dict[str, dict[str, Any]], n_iterations: int) -> str:
    """The comparison as Markdown: wall time, time per iteration, parameters and Dice per region."""
    lines = [
        "| method | parameters | wall (all folds) | s / iteration | Dice whole / core / enhancing "
        "| enhancing per fold |",
        "|---|---|---|---|---|---|",
    ]
    for result in results.values():
        scores = pd.DataFrame(result["scores"])
        per_fold = scores.groupby("fold")[list(REGIONS)].mean()
        means = per_fold.mean()
        dice = " / ".join(f"{means[r]:.3f}" for r in REGIONS)
        folds = " / ".join(f"{v:.3f}" for v in per_fold["enhancing"])
        lines.append(
            f"| {result['label']} | {result['n_parameters'] / 1e6:.2f} M | {result['wall_s']:.1f} s "
            f"| {result['epoch_s'] / n_iterations:.3f} | {dice} | {folds} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="folder for the data, the runs and the results")
    parser.add_argument("--nnunet_python", type=Path, help="python of the virtual environment that has nnunetv2")
    parser.add_argument("--methods", default="nnunet,recipe,equal_width", help="comma-separated, see above")
    parser.add_argument("--tag", default="", help="suffix for the unet3d methods' names (variants with --set)")
    parser.add_argument("--set", action="append", default=[], help="unet3d-train --set KEY=VALUE, repeatable")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=10, help="training batches per epoch")
    parser.add_argument("--val_iterations", type=int, default=2, help="nnU-Net's validation batches per epoch")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--patch", type=int, default=40, help="edge of the cubic training patch and window")
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--seed", type=int, default=3110, help="the data set's and the folds'")
    parser.add_argument("--shapes", type=int, nargs=2, default=[32, 40], help="smallest and largest edge of a case")
    args = parser.parse_args()

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    raw, held_out = prepare(work, args.cases, args.folds, args.seed, tuple(args.shapes))
    (work / "results").mkdir(exist_ok=True)
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        if method == "nnunet":
            if args.nnunet_python is None:
                sys.exit("--nnunet_python is needed to run nnU-Net")
            result = run_nnunet(work, args.nnunet_python, held_out, args)
            name = method
        elif method in ("recipe", "equal_width"):
            name = f"{method}{'_' + args.tag if args.tag else ''}"
            result = run_unet3d(work, raw, held_out, args, name)
        else:
            sys.exit(f"unknown method {method!r}")
        result["scores"] = score(raw, held_out, result["predictions"]).to_dict("records")
        result["budget"] = {k: getattr(args, k) for k in ("epochs", "iterations", "batch", "patch", "folds")}
        (work / "results" / f"{name}.json").write_text(json.dumps(result, indent=2))
    results = {p.stem: json.loads(p.read_text()) for p in sorted((work / "results").glob("*.json"))}
    print(table(results, args.folds * args.epochs * args.iterations))


if __name__ == "__main__":
    main()

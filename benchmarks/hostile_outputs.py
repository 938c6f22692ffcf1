"""Issue 22's hostile pass, replayed: commands that replaced files they did not make, resumes and trackers that
wedged a run, and bad input that ended in a traceback. Run through `hostile.py --sections issue22` (or all sections).

Each scenario runs the real command on tiny synthetic data and records its exit code, first message line and whether
anything was lost (a file that was not the command's to write changed, or a run that no longer trains).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from replay_lab import Lab, command, digest, record

from unet3d.data.synthetic_layouts import write_msd_dataset, write_nnunet_dataset

TINY_RUN = ("--set", "training.n_epochs=1", "--set", "training.iterations_per_epoch=1", "--fold", "1")


def _unchanged(folder: Path, before: str) -> str:
    return "no" if digest(folder) == before else "YES"


def data_loss(lab: Lab) -> None:
    """Items 1-3: predict, export and plan aimed at files they did not make."""
    dataset = write_nnunet_dataset(lab.root / "Dataset001_Tiny", 4, seed=5, shape_range=(16, 16))
    plan = lab.root / "plans" / "exp.json"
    command("plan", "--dataset", str(dataset), "--config_filename", str(plan), "--device", "cpu")
    command("train", "--config_filename", str(plan), "--set", "cross_validation.n_folds=2", *TINY_RUN)
    fold = plan.parent / "exp" / "fold1"
    before = digest(dataset)
    code, message = command(
        "predict", "--model_dirs", str(fold), "--input", str(dataset / "imagesTr"),
        "--output_directory", str(dataset / "labelsTr"),
    )  # fmt: skip
    record("22.1 predict DS/imagesTr into DS/labelsTr (nnU-Net v2)", code, message, _unchanged(dataset, before))

    work_before = digest(fold)
    for name in ("model.pth", "model_best.pth", "config.json"):
        code, message = command(
            "export", "--model_filename", str(fold / "model_best.pth"), "--output", str(fold / name), "--overwrite"
        )
        record(f"22.2 export --output <fold>/{name} --overwrite", code, message, _unchanged(fold, work_before))
    notes = lab.root / "notes.ts"
    notes.write_text("mine")
    (lab.root / "net.ts.json").write_text('{"mine": true}')
    for output, label in ((notes, "an existing file"), (lab.root / "net.ts", "an existing sidecar")):
        code, message = command("export", "--model_filename", str(fold / "model_best.pth"), "--output", str(output))
        lost = "no" if notes.read_text() == "mine" and "mine" in (lab.root / "net.ts.json").read_text() else "YES"
        record(f"22.2 export onto {label}", code, message, lost)
    code, message = command("export", "--model_filename", str(fold / "model_best.pth"), "--output", str(lab.root))
    record("22.2 export --output <an existing folder>", code, message, "no")

    for target in ("dataset.json", "labelsTr/syn_000.nii.gz"):
        code, message = command(
            "plan", "--dataset", str(dataset), "--config_filename", str(dataset / target), "--overwrite"
        )
        record(f"22.3 plan --overwrite --config_filename DS/{target}", code, message, _unchanged(dataset, before))
    (plan.parent / "exp2.data_report.txt").write_text("my notes")
    code, message = command("plan", "--dataset", str(dataset), "--config_filename", str(plan.parent / "exp2.json"))
    kept = (plan.parent / "exp2.data_report.txt").read_text() == "my notes"
    record("22.3 plan beside an existing data report, no --overwrite", code, message, "no" if kept else "YES")


def resumes_and_trackers(lab: Lab) -> None:
    """Items 4-6: accepted optimizer changes, trackers that fail, reports of damaged work dirs."""
    runs = lab.root / "runs"
    config = lab.config("decay", lambda c: c["optimizer"].update(weight_decay=0.1))
    command("train", "--config_filename", str(config), "--output_dir", str(runs))
    raw = json.loads(config.read_text())
    del raw["optimizer"]["weight_decay"]
    config.write_text(json.dumps(raw))
    args = ("--config_filename", str(config), "--output_dir", str(runs), "--accept_config_changes")
    code, message = command("train", *args, "--set", "training.n_epochs=2")
    groups = torch.load(runs / "decay" / "model.pth", weights_only=True)["optimizer"]["param_groups"]
    record("22.4 weight_decay removed, accepted", code, f"weight_decay now {groups[0]['weight_decay']}", "no")
    raw["optimizer"] = {"name": "SGD", "lr": 0.01, "momentum": 0.9}
    config.write_text(json.dumps(raw))
    code, message = command("train", *args, "--set", "training.n_epochs=3")
    record("22.4 Adam → SGD, accepted", code, message or "trained", "no" if code == 0 else "YES")

    os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
    os.chdir(lab.root)  # MLflow puts a SQLite store's artifacts in ./mlruns of the working directory
    store = f"sqlite:///{lab.root / 'mlflow.db'}"
    config = lab.config(
        "tracked", lambda c: c["training"].update(tracker="mlflow", tracker_kwargs={"tracking_uri": store})
    )
    code, message = command("train", "--config_filename", str(config), "--output_dir", str(runs))
    record("22.5 MLflow's SQLite store as installed", code, message or "trained", "no")
    from mlflow.tracking import MlflowClient

    run_id = json.loads((runs / "tracked" / "tracker.json").read_text())["run_id"]
    MlflowClient(tracking_uri=store).delete_run(run_id)
    code, message = command(
        "train", "--config_filename", str(config), "--output_dir", str(runs), "--set", "training.n_epochs=2"
    )
    record("22.5 resume after the MLflow run was deleted", code, message, "no" if code == 0 else "YES")
    os.environ.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="2")
    config = lab.config(
        "offline",
        lambda c: c["training"].update(tracker="mlflow", tracker_kwargs={"tracking_uri": "http://127.0.0.1:9"}),
    )
    code, message = command("train", "--config_filename", str(config), "--output_dir", str(runs))
    record("22.5 an unreachable MLflow server", code, message, "no" if code == 0 else "YES")
    for tracker, kwargs in (("mlflow", {"tracking_uri": 123}), ("wandb", {"mode": "bogus"})):
        config = lab.config("badkw", lambda c, t=tracker, k=kwargs: c["training"].update(tracker=t, tracker_kwargs=k))
        code, message = command("train", "--config_filename", str(config), "--output_dir", str(runs))
        record(f"22.5 {tracker} tracker_kwargs {kwargs}", code, message, "no")

    odd = lab.config("odd", lambda c: c["validation_filenames"][0].update(case_id=r"x$\undefinedmacro$y"))
    command("train", "--config_filename", str(odd), "--output_dir", str(runs))
    page = runs / "odd" / "report.html"
    record("22.6 a case id with $...$", 0, "report written" if page.exists() else "no report", "no")
    copy = lab.root / "moved_copy"
    shutil.copytree(runs / "odd", copy)
    fold_config = json.loads((copy / "config.json").read_text())
    for case in fold_config["validation_filenames"]:
        case["image"] = [str(lab.root / "gone" / Path(p).name) for p in case["image"]]
    (copy / "config.json").write_text(json.dumps(fold_config))
    code, message = command("report", str(copy))
    noted = "picture not drawn" in (copy / "report.html").read_text()
    record("22.6 report after the images moved", code, message or ("pictures noted" if noted else "?"), "no")


def _dataset_json(lab: Lab, name: str, mutate: Callable[[dict], object] | None, raw: bytes | None = None) -> Path:
    """An MSD data set whose dataset.json is changed by `mutate`, or replaced by the bytes `raw`."""
    path = write_msd_dataset(lab.root / name, 3, n_test=1, seed=1, shape_range=(16, 16))
    meta = json.loads(path.read_text())
    if mutate is not None:
        mutate(meta)
    path.write_bytes(raw if raw is not None else json.dumps(meta).encode())
    return path.parent


def bad_input(lab: Lab) -> None:
    """The tracebacks and the checks in the wrong place: each must be one line, exit 2 (74 for the machine)."""
    latin = json.dumps({"name": "Tumeur é", "modality": {"0": "MR"}}, ensure_ascii=False).encode("latin-1")
    cases: dict[str, tuple[Callable[[dict], object] | None, bytes | None]] = {
        "dataset.json in Latin-1": (None, latin),
        "dataset.json nested 200,000 levels": (None, b"[" * 200_000 + b"]" * 200_000),
        "training[1].label: 5": (lambda m: m["training"][1].update(label=5), None),
        "training[1].label: null": (lambda m: m["training"][1].update(label=None), None),
        "test: [5]": (lambda m: m.update(test=[5]), None),
        "a negative label value": (lambda m: m["labels"].update({"-1": "below"}), None),
        "numTraining 7 for 3 cases": (lambda m: m.update(numTraining=7), None),
        "a label value dataset.json does not declare": (lambda m: m["labels"].pop("3"), None),
    }
    for index, (name, (mutate, raw)) in enumerate(cases.items()):
        root = _dataset_json(lab, f"ds_{index}", mutate, raw)
        code, message = command("plan", "--dataset", str(root), "--config_filename", str(lab.root / "p.json"))
        record(f"22 plan: {name}", code, message, "no")
    root = write_nnunet_dataset(lab.root / "nn_bad", 2, seed=3, shape_range=(16, 16))
    meta = json.loads((root / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({**meta, "dataset": {"x": "oops"}}))
    code, message = command("plan", "--dataset", str(root), "--config_filename", str(lab.root / "p.json"))
    record("22 plan: dataset: {'x': 'oops'}", code, message, "no")
    root = write_nnunet_dataset(lab.root / "nn_extra", 2, seed=3, shape_range=(16, 16))
    shutil.copy(root / "imagesTr" / "syn_001_0003.nii.gz", root / "imagesTr" / "syn_001_0004.nii.gz")
    code, message = command("plan", "--dataset", str(root), "--config_filename", str(lab.root / "p.json"))
    record("22 plan: an extra channel file", code, message, "no")
    root = write_nnunet_dataset(lab.root / "nn_flat", 2, seed=3, shape_range=(16, 16))
    for path in [*root.glob("imagesTr/*.nii.gz"), *root.glob("labelsTr/*.nii.gz")]:
        image = nib.load(path)
        nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj)[:, :, :1], image.affine), path)
    code, message = command("plan", "--dataset", str(root), "--config_filename", str(lab.root / "p.json"))
    record("22 plan: (X, Y, 1) cases", code, message, "no")
    root = write_nnunet_dataset(lab.root / "nn_ok", 2, seed=3, shape_range=(16, 16))
    code, message = command(
        "plan", "--dataset", str(root), "--config_filename", str(lab.root / "p.json"), "--spacing", "0.001", "0.001",
        "0.001",
    )  # fmt: skip
    record("22 plan: --spacing 0.001 0.001 0.001", code, message, "no")

    latin = lab.root / "latin.json"
    latin.write_bytes(lab.config("latin").read_text().replace('"Adam"', '"Adam", "note": "é"').encode("latin-1"))
    code, message = command("train", "--config_filename", str(latin))
    record("22 train: a config in Latin-1", code, message, "no")
    config = lab.config("flags")
    for flags in (("--dist_backend", "nonsense"), ("--n_devices", "-1")):
        code, message = command("train", "--config_filename", str(config), *flags)
        record(f"22 train {' '.join(flags)}", code, message, "no")
    runs = lab.root / "runs"
    command("train", "--config_filename", str(config), "--output_dir", str(runs))
    (runs / "flags" / "training_log.csv").write_text("epoch,loss\n1,0.5\n,0.4\n")
    code, message = command("report", str(runs / "flags"))
    record("22 report: NaN in the log's epoch column", code, message, "no")


SECTIONS = (data_loss, resumes_and_trackers, bad_input)

"""Replay the red-team findings of issues 11 and 22 as a hostile user and a failing machine would, and print what
happens.

Every scenario runs the real commands (`python -m unet3d.cli.train` / `unet3d.cli.predict`) on tiny synthetic cases
and reports the exit code, the first line of the message and whether anything was lost (inputs changed, a committed
checkpoint damaged, a run that no longer resumes). The full-disk and read-only scenarios use a real 4 MiB tmpfs and a
read-only remount, so they need root (they are reported as skipped otherwise).

    python benchmarks/hostile.py [--work_dir /tmp/unet3d_hostile] [--sections issue11 issue22]

Writes `benchmarks/results/hostile.md` with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import hostile_outputs
import nibabel as nib
import numpy as np
import torch
from replay_lab import ROWS, Lab, command, digest, record

HERE = Path(__file__).resolve().parent


def data_loss_and_code(lab: Lab) -> None:
    """Items 1-3."""
    config = lab.config("exp")
    command("train", "--config_filename", str(config), "--output_dir", str(lab.root / "runs"))
    before = digest(lab.data)
    folder = lab.data / "case_000"
    code, message = command(
        "predict", "--model_dirs", str(lab.root / "runs" / "exp"), "--input", str(folder),
        "--output_directory", str(folder), "--modality_suffixes", ".nii.gz",
    )  # fmt: skip
    record("1. predict into the input's own folder", code, message, "no" if digest(lab.data) == before else "YES")

    pwned = Path("/tmp/unet3d_pwned")
    pwned.unlink(missing_ok=True)
    for key, value in (("partition", "gpu\ntouch /tmp/unet3d_pwned"), ("sbatch_options", ["--qos=x\ntouch p"])):
        config = lab.config(
            f"inject_{key}", lambda c, k=key, v=value: c.update(cross_validation={"n_folds": 2}, cluster={k: v})
        )
        code, message = command("train", "--config_filename", str(config), "--setup_crossval_only")
        script = lab.data / f"inject_{key}" / "submit_folds.sbatch"
        record(f"2. shell injection through cluster.{key}", code, message, "YES" if script.exists() else "no script")

    for key, text in (("optimizer.lr", "Infinity"), ("training.gradient_clip", "NaN")):
        config = lab.config("nonfinite")
        raw = config.read_text().replace('"lr": 0.01', '"lr": Infinity' if key == "optimizer.lr" else '"lr": 0.01')
        if key == "training.gradient_clip":
            raw = raw.replace('"batch_size": 2', '"batch_size": 2, "gradient_clip": NaN')
        config.write_text(raw)
        code, message = command("train", "--config_filename", str(config), "--output_dir", str(lab.root / "runs"))
        record(f"3. {key}: {text}", code, message, "no")

    nan_copy = lab.root / "nan_t1.nii.gz"
    source = nib.load(lab.data / lab.entries[1]["image"][1])
    data = np.asarray(source.dataobj, dtype=np.float32).copy()
    data[2, 3, 4] = np.nan
    nib.save(nib.Nifti1Image(data, source.affine), nan_copy)
    config = lab.config("nan_voxel", lambda c: c["training_filenames"][1]["image"].__setitem__(1, str(nan_copy)))
    code, message = command("train", "--config_filename", str(config), "--output_dir", str(lab.root / "runs"))
    record("3. a NaN voxel in one image", code, message, "no")

    config = lab.config("diverge", n_epochs=3)
    raw = json.loads(config.read_text())
    raw["optimizer"] = {"name": "SGD", "lr": 1e30, "momentum": 0.9}
    config.write_text(json.dumps(raw))
    code, message = command("train", "--config_filename", str(config), "--output_dir", str(lab.root / "runs"))
    checkpoint = lab.root / "runs" / "diverge" / "model.pth"
    finite = "n/a"
    if checkpoint.exists():
        state = torch.load(checkpoint, weights_only=True)
        finite = "no" if all(torch.isfinite(t).all() for t in state["model"].values()) else "YES (NaN weights saved)"
    record("3. SGD lr 1e30: the loss diverges", code, message, finite)


def concurrency_and_crashes(lab: Lab) -> None:
    """Items 4-6."""
    config = lab.config("busy", n_epochs=200)
    runs = lab.root / "runs"
    first = subprocess.Popen(
        [sys.executable, "-m", "unet3d.cli.train", "--config_filename", str(config), "--output_dir", str(runs)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    while not (runs / "busy" / "model.pth").exists() and first.poll() is None:
        time.sleep(0.2)
    code, message = command("train", "--config_filename", str(config), "--output_dir", str(runs))
    record("4. a second run on a busy work dir", code, message, "no")
    first.send_signal(signal.SIGKILL)
    first.wait()
    code, message = command(
        "train", "--config_filename", str(config), "--output_dir", str(runs), "--set", "training.n_epochs=3"
    )
    record(
        "4. after kill -9 of the holder: rerun", code, "resumed" if code == 0 else message, "no" if code == 0 else "YES"
    )

    config = lab.config("cached", mutate=lambda c: c["dataset"].update(cache="disk"))
    command("train", "--config_filename", str(config), "--output_dir", str(runs))
    entry = sorted((runs / "cached" / "cache").rglob("*.pt"))[0]
    entry.write_bytes(entry.read_bytes()[:64])
    code, message = command(
        "train", "--config_filename", str(config), "--output_dir", str(runs), "--set", "training.n_epochs=2"
    )
    record(
        "5. a truncated disk-cache entry, then rerun",
        code,
        "rebuilt" if code == 0 else message,
        "no" if code == 0 else "YES",
    )

    config = lab.config("term", n_epochs=200)
    run = subprocess.Popen(
        [sys.executable, "-m", "unet3d.cli.train", "--config_filename", str(config), "--output_dir", str(runs)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    while not (runs / "term" / "model.pth").exists() and run.poll() is None:
        time.sleep(0.2)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate()
    message = next((line for line in stderr.splitlines() if line.startswith("terminated")), stderr[-150:])
    code, _ = command(
        "train", "--config_filename", str(config), "--output_dir", str(runs), "--set", "training.n_epochs=2"
    )
    record("6. SIGTERM during training", run.returncode, message, "no (rerun resumed)" if code == 0 else "YES")
    disk_scenarios(lab)


def disk_scenarios(lab: Lab) -> None:
    """Item 6 on a real small file system: full, then read-only."""
    mount = lab.root / "small_disk"
    mount.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True).returncode:
        record("6. disk full / read-only", -1, "skipped: cannot mount a small file system here (needs root)", "")
        return
    try:
        config = lab.config("full", n_epochs=1)
        command("train", "--config_filename", str(config), "--output_dir", str(mount))
        free = shutil.disk_usage(mount).free
        (mount / "filler").write_bytes(b"\0" * max(free - 16 * 1024, 0))
        code, message = command(
            "train", "--config_filename", str(config), "--output_dir", str(mount), "--set", "training.n_epochs=2"
        )
        state = torch.load(mount / "full" / "model.pth", weights_only=True)
        record("6. disk full at the next checkpoint", code, message, "no" if state["epoch"] == 1 else "YES")
        (mount / "filler").unlink()
        code, _ = command(
            "train", "--config_filename", str(config), "--output_dir", str(mount), "--set", "training.n_epochs=2"
        )
        record("6. ... space freed, rerun", code, "resumed from epoch 1" if code == 0 else "failed", "no")
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        other = lab.config("readonly", n_epochs=1)
        code, message = command("train", "--config_filename", str(other), "--output_dir", str(mount))
        record("6. read-only output folder", code, message, "no")
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def silent_wrong_results(lab: Lab) -> None:
    """Items 7-10."""
    runs = lab.root / "runs"
    for version in ("v1", "v2"):
        code, _ = command("train", "--config_filename", str(lab.config(f"exp.{version}")), "--output_dir", str(runs))
    record("7. exp.v1.json then exp.v2.json", code, f"work dirs: {sorted(p.name for p in runs.glob('exp*'))}", "no")

    config = lab.config("resume_lr")
    command("train", "--config_filename", str(config), "--output_dir", str(runs))
    raw = json.loads(config.read_text())
    raw["optimizer"]["lr"] = 0.0001
    raw["training"]["n_epochs"] = 2
    config.write_text(json.dumps(raw))
    saved = (runs / "resume_lr" / "config.json").read_text()
    code, message = command("train", "--config_filename", str(config), "--output_dir", str(runs))
    same = (runs / "resume_lr" / "config.json").read_text() == saved
    record("8. optimizer.lr changed, then resume", code, message, "no (config.json kept)" if same else "YES")

    cv = lab.config("cv", mutate=lambda c: c.update(cross_validation={"n_folds": 2}))
    command("train", "--config_filename", str(cv), "--output_dir", str(runs), "--setup_crossval_only")
    command("train", "--config_filename", str(runs / "cv" / "fold1.json"))
    code, message = command(
        "predict", "--model_dirs", str(runs / "cv"), "--input", str(lab.data), "--output_directory",
        str(lab.root / "predicted"),
    )  # fmt: skip
    record("9. ensemble of a CV dir with one fold trained", code, message, "no")

    twin = lab.config(
        "twin", mutate=lambda c: c["validation_filenames"].append(dict(c["training_filenames"][0], case_id="twin"))
    )
    code, message = command("train", "--config_filename", str(twin), "--output_dir", str(runs))
    record("10. one file under two case ids", code, message, "no")


def upfront_checks(lab: Lab) -> None:
    """Item 11."""
    runs = lab.root / "runs"
    hostile = lab.config(
        "select_fn",
        lambda c: c["dataset"].update(
            training={
                "spatial_augmentations": [{"name": "CropForegroundd", "source_key": "image", "select_fn": "os.system"}]
            }
        ),
    )
    code, message = command("train", "--config_filename", str(hostile), "--output_dir", str(runs))
    record('11. select_fn: "os.system"', code, message, "no")
    huge = lab.config("huge", lambda c: c["dataset"].update(desired_shape=[1024, 1024, 1024]))
    code, message = command("train", "--config_filename", str(huge), "--output_dir", str(runs))
    record("11. desired_shape 1024^3", code, message, "no")
    constant = lab.root / "constant"
    shutil.copytree(lab.data / "case_001", constant)
    for path in constant.glob("*.nii.gz"):
        if "_seg" not in path.name:
            image = nib.load(path)
            nib.save(nib.Nifti1Image(np.zeros(image.shape, np.float32), image.affine), path)
    config = lab.config(
        "constant",
        lambda c: c["training_filenames"].__setitem__(
            1, {"image": [str(constant / Path(p).name) for p in c["training_filenames"][1]["image"]],
                "label": str(constant / "case_001_seg.nii.gz")}
        ),
    )  # fmt: skip
    code, message = command("train", "--config_filename", str(config), "--output_dir", str(runs), "--nthreads", "2")
    record("11. a case of constant images, crop_foreground", code, message, "no")
    four_d = lab.root / "four_d_t1.nii.gz"
    source = nib.load(lab.data / lab.entries[1]["image"][1])
    nib.save(nib.Nifti1Image(np.asarray(source.dataobj)[..., None], source.affine), four_d)
    config = lab.config("four_d", lambda c: c["training_filenames"][1]["image"].__setitem__(1, str(four_d)))
    code, message = command("train", "--config_filename", str(config), "--output_dir", str(runs), "--nthreads", "2")
    record("11. one (X,Y,Z,1) image beside (X,Y,Z) ones", code, message, "no")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work_dir", type=Path, default=Path("/tmp/unet3d_hostile"))
    parser.add_argument(
        "--sections", nargs="+", choices=("issue11", "issue22"), default=["issue11", "issue22"], help="default: all"
    )
    args = parser.parse_args()
    shutil.rmtree(args.work_dir, ignore_errors=True)
    lab = Lab(args.work_dir)
    started = time.perf_counter()
    sections = {
        "issue11": (data_loss_and_code, concurrency_and_crashes, silent_wrong_results, upfront_checks),
        "issue22": hostile_outputs.SECTIONS,
    }
    for scenario in (s for name in args.sections for s in sections[name]):
        scenario(lab)
    table = ["| case | exit | first line of the message | anything lost? |", "|---|---|---|---|"]
    table += [f"| {case} | {code} | {message} | {lost} |" for case, code, message, lost in ROWS]
    text = "\n".join(table)
    print("\n" + text + f"\n\n{len(ROWS)} scenarios in {time.perf_counter() - started:.0f} s")
    machine = f"{os.uname().machine}, {os.cpu_count()} cores, torch {torch.__version__}"
    name = "hostile.md" if len(args.sections) == 2 else f"hostile_{'_'.join(args.sections)}.md"
    (HERE / "results" / name).write_text(f"# Hostile replay ({machine}): {', '.join(args.sections)}\n\n{text}\n")


if __name__ == "__main__":
    main()

"""BraTS scale, side by side with nnU-Net: what each stage costs per case, on the same files.

    python benchmarks/scale.py --work /tmp/scale --n_cases 8 16 32 --nnunet_python ~/nnunet-venv/bin/python
    python benchmarks/scale.py --work /tmp/scale --n_cases 8 --stages pipeline predict --device cuda --tools unet3d

The data: `--n_cases` (the largest of them) BraTS-size cases written once (240 x 240 x 155 voxels of 1 mm, four int16
channels, a brain of about 140 x 175 x 140 voxels in a zero background, nested tumour labels 1/2/3), in nnU-Net v2's
raw layout; the smaller sets are links to the first N cases. `--raw FOLDER` takes a real nnU-Net raw data set instead.
Both tools read the same files.

The stages (`--stages`), each run as its own process, timed from outside with the peak resident memory of its whole
process tree (sampled every 50 ms from /proc):
  plan        unet3d-plan; nnU-Net: nnUNetv2_extract_fingerprint + nnUNetv2_plan_experiment
  check       every file read and checked, first run and rerun: unet3d-train --setup_crossval_only; nnU-Net: its
              dataset integrity check (verify_dataset_integrity), which has no memory between runs
  preprocess  unet3d: its disk cache filled for every training case (the chain up to its random crop); nnU-Net:
              nnUNetv2_preprocess (3d_fullres); with the cache's size on disk
  pipeline    the training pipeline alone at the planned patch and batch size with each tool's planned augmentations
              and oversampling: batches per second with 0 and 1 loader workers, per CPU core used; unet3d also with
              `training.augment_on: device`, and on an accelerator the training step fed from memory (what the
              pipeline must keep up with). Run once, at the smallest N: the cost of a batch does not depend on N.
  predict     one full case from file to written label map, with an untrained network of the planned width and depth
              (DynUNet / nnU-Net's PlainConvUNet, 32-320 filters): 128^3 windows, 50% overlap, Gaussian weights, with
              and without mirroring
Results go to WORK/results.json (kept between invocations; a stage reruns only with --rerun) and the table is
printed as Markdown. nnU-Net runs in its own virtual environment (`--nnunet_python`; see benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
SHAPE = (240, 240, 155)
BRAIN = ((134, 150), (165, 185), (128, 144))  # voxels of the brain's bounding box per axis, as in BraTS
FULL_ID = 700
WARM_UP = 8  # batches before the timed ones: more than either tool's loader queues ahead (nnU-Net: 6)
STAGES = ("plan", "check", "preprocess", "pipeline", "predict")
TOOLS = ("unet3d", "nnunet")
CHANNELS = ("FLAIR", "T1", "T1CE", "T2")
REGIONS = {"background": 0, "whole tumour": [1, 2, 3], "tumour core": [2, 3], "enhancing tumour": [3]}


# ----------------------------------------------------------------------------------------------------------------
# The data
# ----------------------------------------------------------------------------------------------------------------


def _write_case(folder: Path, index: int, seed: int, shape: tuple[int, int, int]) -> None:
    from unet3d.data.synthetic import make_case
    from unet3d.data.synthetic_layouts import PUBLIC_LABELS

    case = f"BraTS_{index:04d}"
    if (folder / "labelsTr" / f"{case}.nii.gz").exists():
        return
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    scale = [s / 240 if i < 2 else s / 155 for i, s in enumerate(shape)]
    inner = tuple(max(16, int(rng.integers(lo, hi + 1) * f)) for (lo, hi), f in zip(BRAIN, scale, strict=True))
    images, label = make_case(inner, rng, len(CHANNELS))
    start = [int(rng.integers(0, s - i + 1)) for s, i in zip(shape, inner, strict=True)]
    where = tuple(slice(b, b + i) for b, i in zip(start, inner, strict=True))
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[:3, 3] = [0.0, 239.0, 0.0]
    for channel, image in enumerate(images):
        full = np.zeros(shape, np.int16)
        full[where] = np.clip(np.round(image), -32768, 32767).astype(np.int16)
        nib.save(nib.Nifti1Image(full, affine), folder / "imagesTr" / f"{case}_{channel:04d}.nii.gz")
    full_label = np.zeros(shape, np.uint8)
    renumbered = np.zeros_like(label)
    for old, new in PUBLIC_LABELS.items():
        renumbered[label == old] = new
    full_label[where] = renumbered
    nib.save(nib.Nifti1Image(full_label, affine), folder / "labelsTr" / f"{case}.nii.gz")


def _dataset_json(folder: Path, n_cases: int) -> None:
    meta = {
        "channel_names": {str(c): name for c, name in enumerate(CHANNELS)},
        "labels": REGIONS,
        "regions_class_order": [1, 2, 3],
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
        "name": folder.name,
    }
    (folder / "dataset.json").write_text(json.dumps(meta, indent=2))


def write_data(raw_root: Path, sizes: list[int], seed: int, shape: tuple[int, int, int], workers: int) -> None:
    """The largest set written once (in parallel), each smaller one as links to its first N cases."""
    full = raw_root / f"Dataset{FULL_ID}_Scale"
    for sub in ("imagesTr", "labelsTr"):
        (full / sub).mkdir(parents=True, exist_ok=True)
    n = max(sizes)
    start = time.perf_counter()
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_write_case, [full] * n, range(n), [seed] * n, [shape] * n))
    _dataset_json(full, n)
    print(f"data: {n} cases of {shape} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    for size in sizes:
        folder = dataset_folder(raw_root, size)
        for sub in ("imagesTr", "labelsTr"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            for path in sorted((full / sub).iterdir()):
                index = int(path.name.split("_")[1].split(".")[0])
                link = folder / sub / path.name
                if index < size and not link.exists():
                    link.symlink_to(path)
        _dataset_json(folder, size)


def dataset_id(size: int) -> int:
    return FULL_ID + size


def dataset_folder(raw_root: Path, size: int) -> Path:
    return raw_root / f"Dataset{dataset_id(size)}_Scale{size:04d}"


# ----------------------------------------------------------------------------------------------------------------
# Measuring a process
# ----------------------------------------------------------------------------------------------------------------


def _tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    total, todo = 0, [pid]
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        current = todo.pop()
        try:
            total += int(Path(f"/proc/{current}/statm").read_text().split()[1]) * page
        except (OSError, ValueError, IndexError):
            pass
        todo.extend(children.get(current, []))
    return total


def measure(command: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> dict[str, Any]:
    """Run `command`; its wall time, the peak RSS of its process tree in MiB and its exit code (it must be 0)."""
    peak = [0]
    out = open(log, "a") if log else subprocess.DEVNULL
    start = time.perf_counter()
    process = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)

    def sample() -> None:
        while process.poll() is None:
            peak[0] = max(peak[0], _tree_rss(process.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = process.wait()
    seconds = time.perf_counter() - start
    sampler.join()
    if log:
        out.close()
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:]) if log else ""
        raise RuntimeError(f"{' '.join(command)} exited with {code}" + (f"; {log} ends:\n{tail}" if log else ""))
    return {"seconds": round(seconds, 2), "peak_mib": round(peak[0] / 2**20)}


UNET3D_CHECKS = r"checked \d+ cases in \d+ file groups in ([\d.]+) s"
NNUNET_CHECKS = r"verify_dataset_integrity took ([\d.]+) s"


def checks_seconds(log: Path, pattern: str = UNET3D_CHECKS) -> float:
    """The file checks' own time (without starting Python and importing), from the last such line of a log."""
    return float(re.findall(pattern, log.read_text())[-1])


def folder_mib(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20, 1)


# ----------------------------------------------------------------------------------------------------------------
# The stages
# ----------------------------------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = args.work.resolve()
        self.raw = args.raw.resolve() if args.raw else self.work / "nnUNet_raw"
        self.results_path = self.work / "results.json"
        self.results = json.loads(self.results_path.read_text()) if self.results_path.exists() else {}
        self.logs = self.work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.python = sys.executable
        self.nnunet_env = {
            "nnUNet_raw": str(self.raw),
            "nnUNet_preprocessed": str(self.work / "nnUNet_preprocessed"),
            "nnUNet_results": str(self.work / "nnUNet_results"),
            "OMP_NUM_THREADS": str(args.threads),
        }

    def save(self) -> None:
        self.results_path.write_text(json.dumps(self.results, indent=2))

    def record(self, key: str, value: dict[str, Any]) -> None:
        self.results[key] = value
        self.save()
        print(f"{key}: {value}", file=sys.stderr)

    def done(self, key: str) -> bool:
        return key in self.results and not self.args.rerun

    def unet3d(self, command: str, *args: str) -> list[str]:
        return [self.python, "-m", f"unet3d.cli.{command}", *args]

    def nnunet(self, tool: str, *args: str) -> list[str]:
        return [str(Path(self.args.nnunet_python).parent / tool), *args]

    def nnunet_helper(self, *args: str) -> list[str]:
        return [self.args.nnunet_python, str(HERE / "scale_nnunet.py"), *args]

    def unet3d_dir(self, size: int) -> Path:
        return self.work / "unet3d" / f"n{size:04d}"

    def plan_config(self, size: int) -> Path:
        return self.unet3d_dir(size) / "plan.json"

    # plan ----------------------------------------------------------------------------------------------------------
    def plan(self, tool: str, size: int) -> None:
        key = f"plan/{tool}/{size}"
        if self.done(key):
            return
        log = self.logs / f"plan_{tool}_{size}.log"
        if tool == "unet3d":
            out = self.plan_config(size)
            out.parent.mkdir(parents=True, exist_ok=True)
            self.record(
                key,
                measure(
                    self.unet3d(
                        "plan",
                        "--dataset",
                        str(dataset_folder(self.raw, size)),
                        "--config_filename",
                        str(out),
                        "--device",
                        "cuda",
                        "--nthreads",
                        str(self.args.threads),
                        "--overwrite",
                    ),
                    log=log,
                ),
            )
            return
        ident = str(dataset_id(size))
        fingerprint = measure(
            self.nnunet("nnUNetv2_extract_fingerprint", "-d", ident, "-np", str(self.args.threads), "--clean"),
            self.nnunet_env,
            log,
        )
        plan = measure(self.nnunet("nnUNetv2_plan_experiment", "-d", ident), self.nnunet_env, log)
        self.record(
            key,
            {
                "seconds": round(fingerprint["seconds"] + plan["seconds"], 2),
                "peak_mib": max(fingerprint["peak_mib"], plan["peak_mib"]),
                "fingerprint_seconds": fingerprint["seconds"],
            },
        )

    # check ---------------------------------------------------------------------------------------------------------
    def check(self, tool: str, size: int) -> None:
        key = f"check/{tool}/{size}"
        if self.done(key):
            return
        log = self.logs / f"check_{tool}_{size}.log"
        if tool == "unet3d":
            cache = self.unet3d_dir(size) / "file_checks"
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(self.unet3d_dir(size) / "cv", ignore_errors=True)  # fold configs of an earlier plan
            env = {"UNET3D_CACHE_DIR": str(cache)}
            command = self.unet3d(
                "train",
                "--config_filename",
                str(self.plan_config(size)),
                "--output_dir",
                str(self.unet3d_dir(size) / "cv"),
                "--setup_crossval_only",
                "--nthreads",
                str(self.args.threads),
            )
            pattern = UNET3D_CHECKS
        else:
            command = self.nnunet_helper("verify", str(dataset_folder(self.raw, size)), str(self.args.threads))
            env, pattern = self.nnunet_env, NNUNET_CHECKS
        first = measure(command, env, log)
        first["checks_seconds"] = checks_seconds(log, pattern)
        rerun = measure(command, env, log)
        self.record(
            key,
            {
                **first,
                "rerun_seconds": rerun["seconds"],
                "rerun_peak_mib": rerun["peak_mib"],
                "rerun_checks_seconds": checks_seconds(log, pattern),
            },
        )

    # preprocess ----------------------------------------------------------------------------------------------------
    def preprocess(self, tool: str, size: int) -> None:
        key = f"preprocess/{tool}/{size}"
        if self.done(key):
            return
        log = self.logs / f"preprocess_{tool}_{size}.log"
        if tool == "unet3d":
            cache = self.unet3d_dir(size) / "cache"
            shutil.rmtree(cache, ignore_errors=True)
            result = measure(
                [
                    self.python,
                    __file__,
                    "--_fill_cache",
                    str(self.plan_config(size)),
                    str(cache),
                    str(self.args.threads),
                ],
                {"OMP_NUM_THREADS": str(self.args.threads)},
                log,
            )
            self.record(key, {**result, "disk_mib": folder_mib(cache)})
            return
        ident = str(dataset_id(size))
        folder = self.work / "nnUNet_preprocessed" / dataset_folder(self.raw, size).name / "nnUNetPlans_3d_fullres"
        shutil.rmtree(folder, ignore_errors=True)
        result = measure(
            self.nnunet("nnUNetv2_preprocess", "-d", ident, "-c", "3d_fullres", "-np", str(self.args.threads)),
            self.nnunet_env,
            log,
        )
        self.record(key, {**result, "disk_mib": folder_mib(folder)})

    # pipeline ------------------------------------------------------------------------------------------------------
    def pipeline(self, tool: str, size: int) -> None:
        for workers in self.args.workers:
            modes = ("loader", "device") if tool == "unet3d" else ("loader",)
            for mode in modes:
                key = f"pipeline/{tool}/{mode}/{workers}/{self.args.device}"
                if self.done(key):
                    continue
                log = self.logs / f"pipeline_{tool}_{mode}_{workers}.log"
                out = self.work / f"pipeline_{tool}_{mode}_{workers}.json"
                if tool == "unet3d":
                    command = [
                        self.python,
                        __file__,
                        "--_pipeline",
                        str(self.plan_config(size)),
                        str(self.unet3d_dir(size) / "cache"),
                        str(out),
                        str(workers),
                        mode,
                        self.args.device,
                        str(self.args.batches),
                    ]
                    env = {"OMP_NUM_THREADS": str(self.args.threads)}
                else:
                    command = self.nnunet_helper("pipeline", str(dataset_id(size)), str(out), str(self.args.batches))
                    env = {**self.nnunet_env, "nnUNet_n_proc_DA": str(workers)}
                try:
                    result = measure(command, env, log)
                except RuntimeError as error:  # one failed variant does not cost the others
                    print(error, file=sys.stderr)
                    continue
                self.record(key, {**result, **json.loads(out.read_text())})

    # predict -------------------------------------------------------------------------------------------------------
    def predict(self, tool: str, size: int) -> None:
        source = dataset_folder(self.raw, size) / "imagesTr"
        case = sorted(source.glob("*_0000.nii.gz"))[0].name[: -len("_0000.nii.gz")]
        inputs = self.work / "predict_input"
        inputs.mkdir(parents=True, exist_ok=True)
        for path in sorted(source.glob(f"{case}_*.nii.gz")):
            if not (inputs / path.name).exists():
                shutil.copy(path, inputs / path.name)
        for mirror in (False, True):
            key = f"predict/{tool}/{'mirror' if mirror else 'plain'}/{self.args.device}"
            if self.done(key):
                continue
            out = self.work / f"predict_{tool}_{int(mirror)}"
            shutil.rmtree(out, ignore_errors=True)
            log = self.logs / f"predict_{tool}_{int(mirror)}.log"
            if tool == "unet3d":
                weights = self.unet3d_dir(size) / "untrained.pth"
                if not weights.exists():
                    subprocess.run(
                        [self.python, __file__, "--_untrained", str(self.plan_config(size)), str(weights)], check=True
                    )
                command = self.unet3d(
                    "predict",
                    "--model_filename",
                    str(weights),
                    "--config_filename",
                    str(self.plan_config(size)),
                    "--input",
                    str(inputs),
                    "--output_directory",
                    str(out),
                    "--device",
                    self.args.device,
                    *(["--tta"] if mirror else []),
                )
                env = {"OMP_NUM_THREADS": str(self.args.threads)}
            else:
                subprocess.run(self.nnunet_helper("checkpoint", str(dataset_id(size))), env=self._env(), check=True)
                command = self.nnunet(
                    "nnUNetv2_predict",
                    *("-i", str(inputs), "-o", str(out), "-d", str(dataset_id(size)), "-c", "3d_fullres"),
                    *("-f", "0", "-chk", "checkpoint_final.pth", "-device", self.args.device, "-npp", "1", "-nps", "1"),
                    *([] if mirror else ["--disable_tta"]),
                )
                env = self.nnunet_env
            result = measure(command, env, log)
            written = sorted(p.name for p in out.glob("*.nii.gz"))
            if len(written) != 1:
                raise RuntimeError(f"{tool} predict wrote {written}, expected one label map; see {log}")
            shape = nib.load(out / written[0]).shape
            self.record(key, {**result, "label_map_shape": list(shape)})

    def _env(self) -> dict[str, str]:
        return {**os.environ, **self.nnunet_env}


# ----------------------------------------------------------------------------------------------------------------
# Helpers run as their own processes (so that each is timed and its memory measured alone)
# ----------------------------------------------------------------------------------------------------------------


def _load(plan: str, cache: str, overrides: dict[str, Any] | None = None) -> Any:
    from unet3d.config.load import load_config

    return load_config(
        plan, {"dataset.cache": "disk", "dataset.cache_dir": cache, "cross_validation": None, **(overrides or {})}
    )


def fill_cache(plan: str, cache: str, workers: str) -> None:
    """unet3d's preprocessing: every training case through the cached part of the training chain, to disk, by
    `workers` loader processes as the first epoch of a run with `--nthreads workers` fills it; the random part (the
    crop and the augmentations), which nnU-Net's preprocessing does not run either, is left out."""
    from unet3d.data.datasets import make_loader
    from unet3d.runtime import resolve_runtime
    from unet3d.training.components import build_dataset

    config = _load(plan, cache)
    runtime = resolve_runtime(0, int(workers), False, device="cpu")
    dataset, _ = build_dataset(config, "training", Path(cache), runtime, augment=True)
    for _ in make_loader(_CachedPart(dataset), batch_size=1, n_workers=int(workers), pin_memory=False):
        pass


class _CachedPart:
    """A dataset whose item i fills the disk cache's entry of case i (and returns 0)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> int:
        self.dataset._cachecheck(self.dataset.data[index])
        return 0


def pipeline(plan: str, cache: str, out: str, workers: str, mode: str, device: str, batches: str) -> None:
    """Batches per second of the training loader (and, with augmentations on the device, those too), after WARM_UP
    batches; on an accelerator also the training step fed from memory."""
    import torch

    from unet3d.devices import synchronize
    from unet3d.runtime import resolve_runtime
    from unet3d.training.components import build_components
    from unet3d.training.loop import train_step

    config = _load(plan, cache, {"training.augment_on": mode, "training.amp": device != "cpu"})
    runtime = resolve_runtime(None if device != "cpu" else 0, int(workers), device != "cpu", device=device)
    components = build_components(config, Path(cache), runtime)
    components.sampler.set_epoch(1, 1, 1)
    n = int(batches)
    iterator = iter(components.train_loader)
    times, shapes = [], None
    for index in range(n + WARM_UP):
        start = time.perf_counter()
        batch = next(iterator)
        if components.device_augmentation is not None:
            batch = components.device_augmentation(batch, runtime.device)
        synchronize(runtime.device)
        if index >= WARM_UP:
            times.append(time.perf_counter() - start)
        shapes = [list(batch["image"].shape), list(batch["label"].shape)]
    result: dict[str, Any] = {
        "batch_size": config.training.batch_size,
        "shapes": shapes,
        "batches_per_s": round(len(times) / sum(times), 3),
        "samples_per_s": round(len(times) * config.training.batch_size / sum(times), 3),
        "cores": workers if int(workers) > 0 else "1 (the training process)",
    }
    if device != "cpu":
        batch = {k: v.to(runtime.device) for k, v in batch.items() if k in ("image", "label")}
        components.device_augmentation = None
        for _ in range(3):
            train_step(components, batch, runtime.device, None)
        synchronize(runtime.device)
        start = time.perf_counter()
        for _ in range(n):
            train_step(components, batch, runtime.device, None)
        synchronize(runtime.device)
        seconds = time.perf_counter() - start
        result["step_samples_per_s_from_memory"] = round(n * config.training.batch_size / seconds, 2)
        result["device_name"] = torch.cuda.get_device_name() if torch.cuda.is_available() else device
    Path(out).write_text(json.dumps(result))


def untrained(plan: str, out: str) -> None:
    """The planned network, untrained, saved as plain weights (what unet3d-predict accepts as a model file)."""
    import torch

    from unet3d.config.load import load_config
    from unet3d.models import build_model

    torch.manual_seed(0)
    torch.save(build_model(load_config(plan).model).state_dict(), out)


# ----------------------------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------------------------


def _seconds(result: dict[str, Any] | None, field: str = "seconds") -> float | None:
    return float(result[field]) if result and field in result else None


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}"


STAGE_ROWS = (  # (row, stage, field): the time fields of each stage's result
    ("plan", "plan", "seconds"),
    ("check, first run", "check", "seconds"),
    ("  the file checks alone", "check", "checks_seconds"),
    ("check, rerun", "check", "rerun_seconds"),
    ("  the file checks alone", "check", "rerun_checks_seconds"),
    ("preprocess", "preprocess", "seconds"),
)


def table(results: dict[str, Any], sizes: list[int]) -> str:
    """The Markdown tables: seconds per stage and N (with unet3d / nnU-Net), the pipeline, prediction, and the cost per
    case fitted over N with what 1,251 cases (BraTS 2021) would cost."""
    lines = [
        "| stage | N | unet3d s | nnU-Net s | unet3d / nnU-Net | peak MiB unet3d / nnU-Net | disk MiB unet3d / nnU-Net "
        "|",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row, stage, field in STAGE_ROWS:
        for size in sizes:
            a, b = results.get(f"{stage}/unet3d/{size}"), results.get(f"{stage}/nnunet/{size}")
            if not a and not b:
                continue
            x, y = _seconds(a, field), _seconds(b, field)
            memory = disk = ""
            if field in ("seconds", "rerun_seconds"):
                peak = "peak_mib" if field == "seconds" else "rerun_peak_mib"
                memory = f"{a.get(peak, '-') if a else '-'} / {b.get(peak, '-') if b else '-'}"
            if "disk_mib" in (a or {}) or "disk_mib" in (b or {}):
                disk = f"{(a or {}).get('disk_mib', '-')} / {(b or {}).get('disk_mib', '-')}"
            lines.append(f"| {row} | {size} | {_cell(x, 2)} | {_cell(y, 2)} | {_ratio(x, y)} | {memory} | {disk} |")
    lines += [
        "",
        "| training pipeline | unet3d samples/s | nnU-Net samples/s | unet3d / nnU-Net | peak MiB unet3d / nnU-Net |",
    ]
    lines.append("|---|---:|---:|---:|---:|")
    for key in sorted(k for k in results if k.startswith("pipeline/unet3d/")):
        _, _, mode, workers, device = key.split("/")
        a, b = results[key], results.get(f"pipeline/nnunet/loader/{workers}/{device}") if mode == "loader" else None
        name = f"{workers} loader workers, augmentations {'in the loader' if mode == 'loader' else 'on the ' + device}"
        rate = b and b["samples_per_s"]
        lines.append(
            f"| {name} ({device}) | {a['samples_per_s']:.2f} | {_cell(rate, 2)} | {_ratio(a['samples_per_s'], rate)} "
            f"| {a['peak_mib']} / {b['peak_mib'] if b else '-'} |"
        )
    lines += ["", "| prediction of one case, file to label map | unet3d s | nnU-Net s | unet3d / nnU-Net | peak MiB |"]
    lines.append("|---|---:|---:|---:|---:|")
    for key in sorted(k for k in results if k.startswith("predict/unet3d/")):
        _, _, mirror, device = key.split("/")
        a, b = results[key], results.get(f"predict/nnunet/{mirror}/{device}")
        lines.append(
            f"| {'with' if mirror == 'mirror' else 'without'} mirroring ({device}) | {a['seconds']:.1f} | "
            f"{_cell(_seconds(b))} | {_ratio(a['seconds'], _seconds(b))} "
            f"| {a['peak_mib']} / {b['peak_mib'] if b else '-'} |"
        )
    lines += [
        "",
        "| cost per case, fitted over N (s = fixed + per case · N) | unet3d | nnU-Net | 1,251 cases: unet3d / "
        "nnU-Net |",
    ]
    lines.append("|---|---|---|---|")
    for row, stage, field in STAGE_ROWS:
        fits = []
        for tool in TOOLS:
            points = [(n, _seconds(results.get(f"{stage}/{tool}/{n}"), field)) for n in sizes]
            points = [(n, t) for n, t in points if t is not None]
            fits.append(np.polyfit(*zip(*points, strict=True), 1) if len(points) >= 2 else None)
        text = [f"{fit[1]:.2f} s + {fit[0]:.3f} s · N" if fit is not None else "-" for fit in fits]
        big = [f"{(fit[1] + fit[0] * 1251) / 60:.1f} min" if fit is not None else "-" for fit in fits]
        lines.append(f"| {row.strip()} ({stage}) | {text[0]} | {text[1]} | {big[0]} / {big[1]} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("--_"):
        sys.path.insert(0, str(ROOT))
        helper = {"--_fill_cache": fill_cache, "--_pipeline": pipeline, "--_untrained": untrained}[sys.argv[1]]
        helper(*sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--raw", type=Path, help="a real nnU-Net raw folder holding DatasetNNN_ScaleN sets")
    parser.add_argument("--n_cases", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--tools", nargs="+", choices=TOOLS, default=list(TOOLS))
    parser.add_argument("--nnunet_python", default=str(Path.home() / "nnunet-venv/bin/python"))
    parser.add_argument("--threads", type=int, default=2, help="processes/threads each tool may use (-np, --nthreads)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1], help="loader workers for the pipeline")
    parser.add_argument("--batches", type=int, default=12, help="timed batches per pipeline measurement")
    parser.add_argument("--device", default="cpu", help="pipeline and predict device (cpu, cuda)")
    parser.add_argument("--shape", type=int, nargs=3, default=list(SHAPE), help="case size (a quick check: smaller)")
    parser.add_argument("--data_workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2021)
    parser.add_argument("--rerun", action="store_true", help="measure stages that have results again")
    args = parser.parse_args()
    sizes = sorted(args.n_cases)
    bench = Bench(args)
    if not args.raw:
        write_data(bench.raw, sizes, args.seed, tuple(args.shape), args.data_workers)
    for size in sizes:  # the smallest set first, all its stages: a partial run still compares the tools
        for stage in args.stages:
            if stage in ("pipeline", "predict") and size != sizes[0]:
                continue  # neither depends on the number of cases
            for tool in args.tools:
                getattr(bench, stage)(tool, size)
    print(table(bench.results, sizes))


if __name__ == "__main__":
    main()

"""unet3d's planner beside nnU-Net 2.8.1's, item by item, on the same numbers and on the same files.

    python benchmarks/plan_parity.py --work /tmp/plan_parity --nnunet_python /path/to/nnunet-venv/bin/python

Two comparisons (`--parts`, either or both):
  fingerprints  data sets described by their cases' spacings and shapes, shaped like the Medical Segmentation
                Decathlon's tasks plus two small edge cases (per-case spacings and shapes jittered, seeded). nnU-Net
                plans each from a fingerprint file written here (`nnUNetv2_plan_experiment`, 8 GB), unet3d from the
                same numbers (`unet3d.planning.rules.plan_geometry`, the accelerator profile, 8 GB). Compared: target
                spacing, median shape, patch, batch, strides, kernels and the low-resolution configuration.
  real_ct       four real CT scans with a vessel label map each (TotalSegmentator's reference files, from its source
                distribution on PyPI: 3 mm and 1.5 mm, RAS and LPS files), written once in nnU-Net's raw layout and
                planned end to end by both (`nnUNetv2_extract_fingerprint` + `nnUNetv2_plan_experiment`;
                `unet3d-plan --device cuda --gpu_memory_gb 8`): the above, the CT clip range, mean and sd, and the
                time each took.

nnU-Net orders axes as its image reader does (z, y, x for these files) and moves the coarsest axis first; every
value is mapped back to unet3d's order (R, A, S) before comparing. Results go to `WORK/plan_parity.json`; the tables
are printed and written to `WORK/plan_parity.md`. nnU-Net must be installed in its own virtual environment (see
benchmarks/README.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from unet3d.atomic import atomic_write_json, atomic_write_text
from unet3d.data.synthetic_layouts import write_nnunet_dataset
from unet3d.planning import rules

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "real_ct_organs"))
from make_data import REFERENCE, fetch  # noqa: E402  (the recipe's download of TotalSegmentator's archive)
from nnunet_parity import run_logged  # noqa: E402

MEMORY_GB = 8.0
# name: (spacing in mm and median shape after cropping, both R, A, S; cases; channels); shaped like MSD's tasks
FINGERPRINTS: dict[str, tuple[list[float], list[int], int, int]] = {
    "brain MR (BraTS-like)": ([1.0, 1.0, 1.0], [138, 169, 138], 484, 4),
    "heart MR": ([1.25, 1.25, 1.37], [232, 320, 115], 20, 1),
    "liver CT": ([0.77, 0.77, 1.0], [512, 512, 432], 131, 1),
    "hippocampus MR": ([1.0, 1.0, 1.0], [35, 50, 36], 260, 1),
    "prostate MR": ([0.62, 0.62, 3.6], [320, 319, 20], 32, 2),
    "lung CT": ([0.79, 0.79, 1.24], [512, 512, 252], 63, 1),
    "pancreas CT": ([0.8, 0.8, 2.5], [512, 512, 93], 281, 1),
    "hepatic vessel CT": ([0.8, 0.8, 5.0], [512, 512, 49], 303, 1),
    "spleen CT": ([0.79, 0.79, 5.0], [512, 512, 90], 41, 1),
    "colon CT": ([0.78, 0.78, 5.0], [512, 512, 95], 126, 1),
    "thin slab": ([0.8, 0.8, 5.0], [64, 64, 6], 10, 1),
    "small isotropic": ([1.0, 1.0, 1.0], [20, 24, 18], 30, 1),
    "brain MR, cases alike": ([1.0, 1.0, 1.0], [138, 169, 138], 40, 4),  # ties between axes: which one shrinks
}
ALIKE = {"brain MR, cases alike"}  # not jittered
# case id: (image, label map, label values kept as 1), inside TotalSegmentator's reference files
REAL_CT = {
    "abdomen": ("example_ct.nii.gz", "example_seg_fast_force_split.nii.gz", (52,)),
    "abdomen_small": ("example_ct_sm.nii.gz", "example_seg.nii.gz", (52,)),
    "aorta": (
        "aorta_report/test_result/models/ct_cropped.nii.gz",
        "aorta_report/test_result/models/aorta.nii.gz",
        (1,),
    ),
    "pulmonary": (
        "pulmonary_report/models/ct_cropped.nii.gz",
        "pulmonary_report/models/pulmonary_artery.nii.gz",
        (1,),
    ),
}
FIRST_ID = 700


def jittered_cases(
    spacing: list[float], shape: list[int], n_cases: int, seed: int, jitter: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Per-case spacings and shapes (R, A, S) around the given ones: shapes ±15%, the coarse axis's spacing ±20% when
    it is thick, others ±5% (all alike without `jitter`)."""
    if not jitter:
        return np.array([spacing] * n_cases, dtype=float), np.array([shape] * n_cases, dtype=int)
    rng = np.random.default_rng(seed)
    spacing_array, shape_array = np.asarray(spacing, dtype=float), np.asarray(shape, dtype=float)
    thick = spacing_array.max() / spacing_array.min() > rules.ANISOTROPY
    spread = np.where(thick & (spacing_array == spacing_array.max()), 0.2, 0.05)
    spacings = np.round(spacing_array * rng.uniform(1 - spread, 1 + spread, (n_cases, 3)), 4)
    shapes = np.maximum(1, np.round(shape_array * rng.uniform(0.85, 1.15, (n_cases, 3)))).astype(int)
    return spacings, shapes


def nnunet_version(python: Path) -> str:
    probe = "import importlib.metadata as m; print(m.version('nnunetv2'))"
    return subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True).stdout.strip()


def _nnunet_env(work: Path) -> dict[str, str]:
    return {
        **os.environ,
        "nnUNet_raw": str(work / "nnUNet_raw"),
        "nnUNet_preprocessed": str(work / "nnUNet_preprocessed"),
        "nnUNet_results": str(work / "nnUNet_results"),
    }


def write_fingerprint_dataset(
    work: Path, dataset_id: int, spacings: np.ndarray, shapes: np.ndarray, channels: int
) -> str:
    """An nnU-Net raw folder whose dataset.json lists every case on one tiny image (nnU-Net's planner reads the
    fingerprint, not the images) and the fingerprint itself, in nnU-Net's axis order (z, y, x)."""
    name = f"Dataset{dataset_id}_Fingerprint"
    raw, preprocessed = work / "nnUNet_raw" / name, work / "nnUNet_preprocessed" / name
    (raw / "imagesTr").mkdir(parents=True, exist_ok=True)
    (raw / "labelsTr").mkdir(parents=True, exist_ok=True)
    preprocessed.mkdir(parents=True, exist_ok=True)
    tiny = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4))
    nib.save(tiny, str(raw / "imagesTr" / "tiny_0000.nii.gz"))
    nib.save(tiny, str(raw / "labelsTr" / "tiny.nii.gz"))
    cases = {
        f"case{i:04d}": {"images": ["imagesTr/tiny_0000.nii.gz"] * channels, "label": "labelsTr/tiny.nii.gz"}
        for i in range(len(shapes))
    }
    dataset = {
        "channel_names": {str(c): f"MR{c}" for c in range(channels)},
        "labels": {"background": 0, "structure": 1},
        "numTraining": len(shapes),
        "file_ending": ".nii.gz",
        "dataset": cases,
    }
    intensities = {"mean": 0.0, "median": 0.0, "std": 1.0, "min": -1.0, "max": 1.0}
    fingerprint = {
        "spacings": spacings[:, ::-1].tolist(),
        "shapes_after_crop": shapes[:, ::-1].tolist(),
        "foreground_intensity_properties_per_channel": {
            str(c): {**intensities, "percentile_00_5": -1.0, "percentile_99_5": 1.0} for c in range(channels)
        },
        "median_relative_size_after_cropping": 1.0,
    }
    (raw / "dataset.json").write_text(json.dumps(dataset))
    (preprocessed / "dataset_fingerprint.json").write_text(json.dumps(fingerprint))
    return name


def _ras(values: list[Any], backward: list[int]) -> list[Any]:
    """An nnU-Net per-axis list (transposed order) in R, A, S order: untransposed to z, y, x, then reversed."""
    return [values[i] for i in backward][::-1]


def nnunet_plan(plans: dict[str, Any]) -> dict[str, Any]:
    """The comparable items of an nnU-Net plans file, in R, A, S order."""
    backward = plans["transpose_backward"]
    full = plans["configurations"]["3d_fullres"]
    arch = full["architecture"]["arch_kwargs"]
    lowres = plans["configurations"].get("3d_lowres")
    return {
        "spacing": [round(v, 4) for v in _ras(full["spacing"], backward)],
        "median_shape": [round(v, 1) for v in _ras(full["median_image_size_in_voxels"], backward)],
        "patch": _ras(full["patch_size"], backward),
        "batch": full["batch_size"],
        "strides": [_ras(s, backward) for s in arch["strides"]],
        "kernels": [_ras(k, backward) for k in arch["kernel_sizes"]],
        "lowres_spacing": None if lowres is None else [round(v, 4) for v in _ras(lowres["spacing"], backward)],
        "lowres_patch": None if lowres is None else _ras(lowres["patch_size"], backward),
    }


def unet3d_geometry(spacings: np.ndarray, shapes: np.ndarray) -> dict[str, Any]:
    """The same items from unet3d's rules, accelerator profile."""
    geometry = rules.plan_geometry(spacings, shapes, rules.profile_for("gpu", MEMORY_GB))
    lowres = geometry.low_resolution
    return {
        "spacing": geometry.spacing,
        "median_shape": [round(v, 1) for v in geometry.median_shape],
        "patch": geometry.network.patch,
        "batch": geometry.network.batch_size,
        "strides": geometry.network.strides,
        "kernels": geometry.network.kernels,
        "lowres_spacing": None if lowres is None else lowres.spacing,
        "lowres_patch": None if lowres is None else lowres.network.patch,
    }


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) or isinstance(b, float):
        return abs(float(a) - float(b)) <= 1e-3 * max(1.0, abs(float(b)))
    return a == b


ITEMS = ("spacing", "median_shape", "patch", "batch", "strides", "kernels", "lowres_spacing", "lowres_patch")


def compare_fingerprints(work: Path, python: Path, seed: int) -> list[dict[str, Any]]:
    """Plans every FINGERPRINTS data set with both; returns one row per data set."""
    rows, env, log = [], _nnunet_env(work), work / "nnunet.log"
    for index, (label, (spacing, shape, n_cases, channels)) in enumerate(FINGERPRINTS.items()):
        spacings, shapes = jittered_cases(spacing, shape, n_cases, seed + index, label not in ALIKE)
        dataset_id = FIRST_ID + index
        name = write_fingerprint_dataset(work, dataset_id, spacings, shapes, channels)
        command = [str(python.parent / "nnUNetv2_plan_experiment"), "-d", str(dataset_id)]
        run_logged([*command, "-gpu_memory_target", str(MEMORY_GB)], env, log)
        plans = json.loads((work / "nnUNet_preprocessed" / name / "nnUNetPlans.json").read_text())
        rows.append({"data set": label, "nnunet": nnunet_plan(plans), "unet3d": unet3d_geometry(spacings, shapes)})
    return rows


def write_real_ct(work: Path, cache: Path) -> Path:
    """The four CT scans in nnU-Net's raw layout (images as TotalSegmentator ships them, label maps binarized)."""
    raw = work / "nnUNet_raw" / "Dataset800_RealCT"
    if (raw / "dataset.json").exists():
        return raw
    (raw / "imagesTr").mkdir(parents=True, exist_ok=True)
    (raw / "labelsTr").mkdir(parents=True, exist_ok=True)
    wanted = {REFERENCE + name: case for case, (image, label, _) in REAL_CT.items() for name in (image, label)}
    unpacked = work / "reference_files"
    with tarfile.open(fetch(cache)) as tar:
        for member in tar.getmembers():
            if member.name in wanted:
                target = unpacked / member.name.removeprefix(REFERENCE)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
    for case, (image, label, values) in REAL_CT.items():
        (raw / "imagesTr" / f"{case}_0000.nii.gz").write_bytes((unpacked / image).read_bytes())
        source = nib.load(str(unpacked / label))
        mask = np.isin(np.asanyarray(source.dataobj), values).astype(np.uint8)
        nib.save(nib.Nifti1Image(mask, source.affine, source.header), str(raw / "labelsTr" / f"{case}.nii.gz"))
    dataset = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "vessel": 1},
        "numTraining": len(REAL_CT),
        "file_ending": ".nii.gz",
    }
    (raw / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return raw


def write_mr(work: Path, seed: int) -> Path:
    """Twelve synthetic BraTS-like cases (four MR channels, a zeroed background around the head, nested regions,
    per-axis spacings from 0.8 to 2 mm, RAS and LPS files) in nnU-Net's raw layout."""
    raw = work / "nnUNet_raw" / "Dataset801_SyntheticMR"
    if not (raw / "dataset.json").exists():
        write_nnunet_dataset(raw, 12, seed=seed, shape_range=(40, 56), orientations=("RAS", "LPS"))
    return raw


def compare_end_to_end(work: Path, python: Path, raw: Path) -> dict[str, Any]:
    """Plans one raw data set with both tools, from its files."""
    dataset_id = raw.name.split("_")[0].removeprefix("Dataset")
    env, log = _nnunet_env(work), work / "nnunet.log"
    bin_dir = python.parent
    fingerprint_s = run_logged([str(bin_dir / "nnUNetv2_extract_fingerprint"), "-d", dataset_id, "-np", "2"], env, log)
    command = [str(bin_dir / "nnUNetv2_plan_experiment"), "-d", dataset_id, "-gpu_memory_target", str(MEMORY_GB)]
    plan_s = run_logged(command, env, log)
    plans = json.loads((work / "nnUNet_preprocessed" / raw.name / "nnUNetPlans.json").read_text())
    config_path = work / "unet3d" / f"{raw.name}.json"
    unet3d_command = [
        sys.executable, "-m", "unet3d.cli.plan", "--dataset", str(raw), "--config_filename", str(config_path),
        "--device", "cuda", "--gpu_memory_gb", str(MEMORY_GB), "--overwrite",
    ]  # fmt: skip
    unet3d_s = run_logged(unet3d_command, {**os.environ, "UNET3D_CACHE_DIR": "off"}, work / "unet3d.log")
    config = json.loads(config_path.read_text())
    model, dataset, planned = config["model"], config["dataset"], config["planned"]
    ours = {
        "spacing": dataset["spacing"],
        "median_shape": planned["median_shape"],
        "patch": config["inference"]["roi_size"],
        "batch": config["training"]["batch_size"],
        "strides": model["strides"],
        "kernels": model["kernel_size"],
        "lowres_spacing": planned.get("low_resolution", {}).get("spacing"),
        "lowres_patch": planned.get("low_resolution", {}).get("patch"),
    }
    full = plans["configurations"]["3d_fullres"]
    theirs = nnunet_plan(plans)
    intensities = plans["foreground_intensity_properties_per_channel"]
    kwargs = dataset["normalization_kwargs"]
    return {
        "nnunet": {
            **theirs,
            "normalization": [
                f"{scheme}{' (inside the non-zero mask)' if mask else ''}"
                for scheme, mask in zip(full["normalization_schemes"], full["use_mask_for_norm"], strict=True)
            ],
            "ct": [[c["percentile_00_5"], c["percentile_99_5"], c["mean"], c["std"]] for c in intensities.values()],
            "seconds": fingerprint_s + plan_s,
        },
        "unet3d": {
            **ours,
            "normalization": [f"{dataset['normalization']} {json.dumps(kwargs)}"],
            "ct": [[kwargs[k] for k in ("lower", "upper", "mean", "std")]] if "lower" in kwargs else None,
            "seconds": unet3d_s,
        },
    }


def _cell(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, list) and value and isinstance(value[0], list):
        return " ".join("x".join(str(v) for v in level) for level in value)
    if isinstance(value, list):
        return "x".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def fingerprint_table(rows: list[dict[str, Any]]) -> str:
    """One line per data set and item that differ, and a count of those that agree."""
    lines = ["| data set | " + " | ".join(ITEMS) + " |", "|---" * (len(ITEMS) + 1) + "|"]
    agree = {item: 0 for item in ITEMS}
    for row in rows:
        cells = []
        for item in ITEMS:
            same = _same(row["unet3d"][item], row["nnunet"][item])
            agree[item] += same
            cells.append("=" if same else f"{_cell(row['unet3d'][item])} vs {_cell(row['nnunet'][item])}")
        lines.append(f"| {row['data set']} | " + " | ".join(cells) + " |")
    lines.append("| **agree** | " + " | ".join(f"{agree[i]}/{len(rows)}" for i in ITEMS) + " |")
    return "\n".join(lines)


def _statistics(values: list[list[float]] | None) -> str:
    if values is None:
        return "none (per-case z-score)"
    return "; ".join(f"clip {low:.1f} to {high:.1f}, mean {mean:.2f}, sd {sd:.2f}" for low, high, mean, sd in values)


def end_to_end_table(result: dict[str, Any]) -> str:
    """One line per item: unet3d's value, nnU-Net's, and = where equal."""
    lines = ["| item | unet3d | nnU-Net 2.8.1 | |", "|---|---|---|---|"]
    for item in ITEMS:
        ours, theirs = result["unet3d"][item], result["nnunet"][item]
        lines.append(f"| {item} | {_cell(ours)} | {_cell(theirs)} | {'=' if _same(ours, theirs) else ''} |")
    ct = result["unet3d"]["ct"], result["nnunet"]["ct"]
    lines.append(f"| foreground intensities | {_statistics(ct[0])} | {_statistics(ct[1])} | |")
    lines.append(
        f"| normalization | {'; '.join(result['unet3d']['normalization'])} | "
        f"{'; '.join(result['nnunet']['normalization'])} | |"
    )
    lines.append(f"| seconds | {result['unet3d']['seconds']:.1f} | {result['nnunet']['seconds']:.1f} | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--nnunet_python", type=Path, default=Path.home() / "nnunet-venv/bin/python")
    parts = ("fingerprints", "real_ct", "mr")
    parser.add_argument("--parts", nargs="+", choices=parts, default=list(parts))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "unet3d")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    kept = args.work / "plan_parity.json"  # the parts not rerun now are kept from an earlier invocation
    results: dict[str, Any] = json.loads(kept.read_text()) if kept.exists() else {}
    if results.get("seed") != args.seed:
        results = {}
    results.update({"memory_gb": MEMORY_GB, "seed": args.seed, "nnunet": nnunet_version(args.nnunet_python)})
    text = []
    if "fingerprints" in args.parts:
        results["fingerprints"] = compare_fingerprints(args.work, args.nnunet_python, args.seed)
    if "fingerprints" in results:
        text += [
            "## The same fingerprints (unet3d vs nnU-Net; = where equal)",
            "",
            fingerprint_table(results["fingerprints"]),
        ]
    if "real_ct" in args.parts:
        results["real_ct"] = compare_end_to_end(args.work, args.nnunet_python, write_real_ct(args.work, args.cache))
    if "real_ct" in results:
        text += ["", "## Four real CT scans, planned end to end", "", end_to_end_table(results["real_ct"])]
    if "mr" in args.parts:
        results["mr"] = compare_end_to_end(args.work, args.nnunet_python, write_mr(args.work, args.seed))
    if "mr" in results:
        text += ["", "## Twelve synthetic MR cases with a zeroed background", "", end_to_end_table(results["mr"])]
    atomic_write_json(args.work / "plan_parity.json", results)
    atomic_write_text(args.work / "plan_parity.md", "\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()

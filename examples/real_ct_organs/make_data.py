"""Fetch real CT scans with organ label maps from the package registry and write them as a unet3d case list.

The TotalSegmentator source distribution (Apache-2.0, 38 MB on PyPI) keeps, as regression references for its own
tests, an abdominal CT (NIfTI, 3 mm) and a CT as a DICOM series (0.98 x 0.98 x 2 mm), each with a multi-organ label
map. Those label maps are TotalSegmentator's own predictions, not manual annotations. This script downloads the
archive once (cached, SHA-256 checked), unpacks the two scans, keeps four organs found in both (renumbered 1 spleen,
2 liver, 3 stomach, 4 aorta) and writes `cases.json`:

    python examples/real_ct_organs/make_data.py [--output DIR] [--cache DIR]

The DICOM case stays a folder of slices (read through ITK), and its label map stays NIfTI in the axis order
TotalSegmentator wrote it, which differs from the series' (unet3d reorders it onto the series' grid).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np

PACKAGE = "totalsegmentator==2.18.0"
ARCHIVE = "totalsegmentator-2.18.0.tar.gz"
SHA256 = "5d4223ef93973bc36d710869d11e7742ead2c154c72f7f9edcaaadd5b6c4bd03"
REFERENCE = "totalsegmentator-2.18.0/tests/reference_files/"
ORGANS = {1: "spleen", 5: "liver", 6: "stomach", 52: "aorta"}  # TotalSegmentator's "total" task values
CASES = {
    "abdomen_ct": ("example_ct.nii.gz", "example_seg_fast_force_split.nii.gz"),
    "dicom_ct": ("example_ct_dicom", "example_seg_dicom.nii.gz"),
}
HERE = Path(__file__).resolve().parent
NO_DOWNLOAD = 3  # the exit status when the registry cannot be reached (the smoke test then skips, saying so)


def fetch(cache: Path) -> Path:
    """The source archive in `cache`, downloaded from the package registry if missing; its checksum is verified."""
    archive = cache / ARCHIVE
    if not archive.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        download = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
        if subprocess.run([*download, PACKAGE, "--dest", str(cache)], check=False).returncode != 0:
            print(f"cannot download {PACKAGE} from the package registry", file=sys.stderr)
            raise SystemExit(NO_DOWNLOAD)
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != SHA256:
        raise SystemExit(f"{archive}: SHA-256 {digest} is not the expected {SHA256}; delete it and run again")
    return archive


def unpack(archive: Path, output: Path) -> None:
    """Extract the scans and label maps of CASES into `output/raw/`."""
    wanted = {name for pair in CASES.values() for name in pair}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            relative = member.name.removeprefix(REFERENCE)
            if member.isfile() and relative != member.name and relative.split("/")[0] in wanted:
                target = output / "raw" / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as source, open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink)


def keep_organs(source: Path, target: Path) -> dict[str, int]:
    """Write `source`'s label map with only ORGANS, renumbered 1..4, on the same grid; returns voxels per organ."""
    image = nib.load(str(source))
    labels = np.asanyarray(image.dataobj)
    kept = np.zeros(labels.shape, dtype=np.uint8)
    for new, old in enumerate(ORGANS, start=1):
        kept[labels == old] = new
    nib.save(nib.Nifti1Image(kept, image.affine, image.header), str(target))
    return {ORGANS[old]: int((kept == new).sum()) for new, old in enumerate(ORGANS, start=1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=HERE / "data")
    parser.add_argument(
        "--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "unet3d"
    )
    args = parser.parse_args(argv)
    unpack(fetch(args.cache), args.output)
    cases = []
    for case_id, (scan, labels) in CASES.items():
        organs = keep_organs(args.output / "raw" / labels, args.output / f"{case_id}_organs.nii.gz")
        print(f"{case_id}: {scan}, organ voxels {organs}")
        cases.append({"image": f"raw/{scan}", "label": f"{case_id}_organs.nii.gz", "case_id": case_id})
    (args.output / "cases.json").write_text(json.dumps(cases, indent=2) + "\n")
    print(f"wrote {args.output / 'cases.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

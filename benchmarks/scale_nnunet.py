"""nnU-Net's side of `scale.py`, run by the interpreter of nnU-Net's own virtual environment (never imports unet3d).

    python scale_nnunet.py verify FOLDER N_PROCESSES     nnU-Net's dataset integrity check (every file read)
    python scale_nnunet.py pipeline DATASET_ID OUT N     N timed batches of its training loader (after 8), to OUT
    python scale_nnunet.py checkpoint DATASET_ID         an untrained 3d_fullres network saved as fold 0's final
                                                         checkpoint, with plans.json and dataset.json, for prediction

nnUNet_raw, nnUNet_preprocessed, nnUNet_results and nnUNet_n_proc_DA come from the environment, as for nnU-Net's own
commands.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import torch

WARM_UP = 8  # as scale.py


def _trainer(dataset_id: str):
    from nnunetv2.run.run_training import get_trainer_from_args

    trainer = get_trainer_from_args(dataset_id, "3d_fullres", 0, device=torch.device("cpu"))
    trainer.initialize()
    return trainer


def verify(folder: str, n_processes: str) -> None:
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    start = time.perf_counter()
    verify_dataset_integrity(folder, num_processes=int(n_processes))
    print(f"verify_dataset_integrity took {time.perf_counter() - start:.2f} s", flush=True)


def pipeline(dataset_id: str, out: str, batches: str) -> None:
    trainer = _trainer(dataset_id)
    loader, _ = trainer.get_dataloaders()
    for _ in range(WARM_UP):  # more batches than its queue holds (6): the timed ones are made while timed
        batch = next(loader)
    times = []
    for _ in range(int(batches)):
        start = time.perf_counter()
        batch = next(loader)
        times.append(time.perf_counter() - start)
    target = batch["target"][0] if isinstance(batch["target"], list) else batch["target"]
    result = {
        "batch_size": trainer.batch_size,
        "shapes": [list(batch["data"].shape), list(target.shape)],
        "batches_per_s": round(len(times) / sum(times), 3),
        "samples_per_s": round(len(times) * trainer.batch_size / sum(times), 3),
    }
    Path(out).write_text(json.dumps(result))
    if hasattr(loader, "_finish"):
        loader._finish()


def checkpoint(dataset_id: str) -> None:
    trainer = _trainer(dataset_id)
    *_, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    trainer.inference_allowed_mirroring_axes = mirror_axes
    folder = Path(trainer.output_folder)
    folder.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(str(folder / "checkpoint_final.pth"))
    base = Path(trainer.output_folder_base)
    Path(base / "plans.json").write_text(json.dumps(trainer.plans_manager.plans, indent=2))
    Path(base / "dataset.json").write_text(json.dumps(trainer.dataset_json, indent=2))
    fingerprint = Path(trainer.preprocessed_dataset_folder_base) / "dataset_fingerprint.json"
    shutil.copy(fingerprint, base / "dataset_fingerprint.json")


if __name__ == "__main__":
    {"verify": verify, "pipeline": pipeline, "checkpoint": checkpoint}[sys.argv[1]](*sys.argv[2:])

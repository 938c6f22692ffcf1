"""The config schema: one typed record per JSON section, with defaults and a one-line doc per key.

This is the single place that says which keys exist (`config.fields.parse_section` turns a JSON object into one of
these records and reports what is wrong with its JSON path). The README's config reference is generated from these
records (`reference_markdown`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from unet3d.config.cases import Case
from unet3d.config.fields import NamedSpec, doc
from unet3d.config.regions import label_regions, region_names
from unet3d.errors import ConfigError

# Each tracker's settings (`training.tracker_kwargs`): a string, or one of the listed values.
TRACKER_SETTINGS: dict[str, dict[str, tuple[str, ...]]] = {
    "mlflow": {"experiment_name": (), "tracking_uri": ()},
    "wandb": {"dir": (), "entity": (), "group": (), "mode": ("online", "offline", "disabled", "shared"), "project": ()},
}


@dataclass
class DatasetConfig:
    """The `dataset` section: how each case is turned into network input and target."""

    name: str = doc(
        "3DUnetCNN dataset class. 'SegmentationDatasetPersistent' caches preprocessing on disk (like `cache: disk`).",
        "SegmentationDataset",
        choices=("SegmentationDataset", "SegmentationDatasetPersistent"),
        resume="applied",
    )
    labels: list[int | list[int]] | None = doc(
        "Label values, one output channel each; a nested list makes one channel of several values.", None
    )
    setup_label_hierarchy: bool = doc(
        "Channel i is the union of labels[i:] (BraTS [2,1,4] → whole tumour, tumour core, enhancing).", False
    )
    desired_shape: list[int] | None = doc("Spatial shape of every network input (voxels).", None, minimum=1)
    resample: bool = doc("Resize each (cropped) volume to `desired_shape` (otherwise pad/crop to it).", False)
    crop_foreground: bool = doc(
        "Crop each case to the bounding box of its foreground (see foreground_percentile) first.", False
    )
    foreground_percentile: float = doc(
        "With crop_foreground: voxels above this quantile (0-1) of a channel's intensities count as foreground.",
        0.1,
        minimum=0.0,
        maximum=1.0,
    )
    orientation: str | None = doc("Reorient every case to these axis codes (e.g. 'RAS') before anything else.", None)
    spacing: list[float] | None = doc(
        "Resample every case to this voxel spacing in mm (images linear, labels nearest) after reorientation; "
        "predictions are resampled back to each case's grid.",
        None,
        minimum=1e-6,
    )
    random_crop: bool = doc("Take a random `desired_shape` patch instead of resizing the whole volume.", False)
    normalization: str | None = doc(
        "MONAI dictionary intensity transform for the images, e.g. 'NormalizeIntensityD' ('zero_mean'); null: none.",
        "zero_mean",
    )
    normalization_kwargs: dict[str, Any] = doc("Keyword arguments of the normalization transform.", {})
    normalize_whole_case: bool = doc(
        "Normalize each whole preprocessed case before random crops and augmentations, as nnU-Net does (statistics "
        "of the case, not of a patch; cached). false: normalize each training sample after its spatial augmentations.",
        True,
    )
    spatial_augmentations: list[NamedSpec] = doc(
        "MONAI dictionary transforms applied to image and label: [{'name': 'RandFlipD', 'prob': 0.5, ...}].", []
    )
    intensity_augmentations: list[NamedSpec] = doc(
        "MONAI dictionary transforms applied to the images only, after normalization.", []
    )
    cache: Literal["auto", "none", "disk", "memory"] = doc(
        "Where deterministic preprocessing is cached: 'disk' (cache_dir), 'memory', 'none'; 'auto': memory when it "
        "fits in a quarter of the available RAM, else disk.",
        "auto",
        resume="applied",
    )
    cache_dir: str | None = doc(
        "Folder of the disk cache (default: <work dir>/cache); relative to the config.", None, resume="applied"
    )
    reader: str | None = doc(
        "MONAI image reader; null picks the reader of each file's format (NIfTI: nibabel, MetaImage/NRRD: ITK, "
        "pictures: Pillow), not MONAI's own choice, which depends on the installed packages.",
        None,
        choices=(None, "NibabelReader", "ITKReader", "PILReader", "NumpyReader", "PydicomReader", "NrrdReader"),
    )
    inference: bool | Literal["auto"] = doc(
        "Accepted for 3DUnetCNN compatibility; unet3d decides per file group whether labels are read.", "auto"
    )
    verbose: bool = doc(
        "Accepted for 3DUnetCNN compatibility; no effect (use --debug for a verbose log).", False, resume="applied"
    )
    training: dict[str, Any] | None = doc("Dataset keys that apply to the training split only (augmentations).", None)
    validation: dict[str, Any] | None = doc("Dataset keys that apply to validation and prediction only.", None)

    @property
    def regions(self) -> list[tuple[int, ...]]:
        """The label values of each output channel (see `unet3d.config.regions`)."""
        return label_regions(self.labels or [], self.setup_label_hierarchy)

    @property
    def region_names(self) -> list[str]:
        """Each channel's values joined with '+', as log and metric columns name them ('2+1+4', '1+4', '4')."""
        return region_names(self.regions)


@dataclass
class TrainingConfig:
    """The `training` section: the loop, checkpoints and stopping."""

    n_epochs: int = doc(
        "Number of epochs; raise it and rerun to extend a finished run.", 1000, minimum=1, resume="applied"
    )
    batch_size: int = doc("Training batch size.", 1, minimum=1)
    validation_batch_size: int = doc(
        "Batch size of the validation in the preprocessed space (full-volume validation and prediction run one case "
        "at a time).",
        1,
        minimum=1,
        resume="applied",
    )
    device: Literal["auto", "cpu", "cuda", "npu", "xpu", "mps"] = doc(
        "Where unet3d-train runs: 'auto' takes torch's accelerator (CUDA, Ascend NPU, Intel XPU, Apple MPS) when it "
        "has a device, else the CPU (logged); an absent named device is an error. --device overrides it.",
        "auto",
        resume="applied",
    )
    amp: bool | Literal["fp16", "bf16"] = doc(
        "Mixed precision on an accelerator: true/'fp16' (with a gradient scaler) or 'bf16'; ignored on the CPU.", False
    )
    select_by: Literal["val_loss", "val_dice", "ema_val_dice", "last"] = doc(
        "Which epoch's model is the best, for model_best.pth, early stopping, a ReduceLROnPlateau without its own "
        "monitor and the summary's best epoch: the lowest val_loss, the highest val_dice, the highest moving average "
        "of val_dice (ema_val_dice, nnU-Net's pseudo-Dice), or the last epoch. A resume keeps model_best.pth and "
        "measures later epochs against it by the new rule.",
        "val_loss",
        resume="applied",
    )
    early_stopping_patience: int | None = doc(
        "Stop after this many epochs without a new best model (see select_by; null: never).",
        None,
        minimum=1,
        resume="applied",
    )
    save_best: bool = doc("Write model_best.pth whenever select_by finds a new best epoch.", True, resume="applied")
    save_every_n_epochs: int | None = doc(
        "Also keep model_epoch{N}.pth every N epochs.", None, minimum=1, resume="applied"
    )
    save_last_n_models: int | None = doc(
        "Keep only the last N model_epoch{N}.pth files.", None, minimum=1, resume="applied"
    )
    samples_per_epoch: int | None = doc(
        "Training samples drawn per epoch (with replacement when larger than the training set).", None, minimum=1
    )
    iterations_per_epoch: int | None = doc(
        "Fixed number of training batches per epoch, drawn at random with replacement (nnU-Net's 250).", None, minimum=1
    )
    gradient_clip: float | None = doc(
        "Clip the gradients' global norm to this value (null: no clipping).", None, minimum=0.0
    )
    output_bias_prior: float | None = doc(
        "Start every region (sigmoid) or class (softmax; the background takes the rest) at this probability, e.g. "
        "0.01, by setting the output layers' biases; keeps small regions from being switched off by the first steps "
        "of short schedules (null: the network's own initialization, a sigmoid starts at 0.5).",
        None,
        minimum=1e-6,
        maximum=0.5,
    )
    progress_plot: bool = doc(
        "Redraw progress.png (losses, Dice, lr, epoch time) after every epoch.", True, resume="applied"
    )
    tensorboard: bool = doc(
        "Mirror the training log to TensorBoard event files in <work dir>/tensorboard/; needs unet3d[tensorboard].",
        False,
        resume="applied",
    )
    tracker: str | None = doc(
        "Mirror the log, the config and the final metrics to 'mlflow' or 'wandb' (needs unet3d[mlflow] / [wandb]).",
        None,
        choices=(None, *TRACKER_SETTINGS),
        resume="applied",
    )
    tracker_kwargs: dict[str, Any] = doc(
        "The tracker's settings, each a string: "
        + "; ".join(f"{name}: {', '.join(settings)}" for name, settings in TRACKER_SETTINGS.items())
        + " (wandb's mode: online, offline, disabled or shared).",
        {},
        resume="applied",
    )
    log_every_n_iterations: int | None = doc(
        "Log the running loss and learning rate every N batches.", None, minimum=1, resume="applied"
    )
    training_iterations_per_epoch: int = doc("Passes over the training loader per epoch (3DUnetCNN key).", 1, minimum=1)
    prefetch_factor: int | None = doc(
        "Batches each loader worker prepares ahead (with --nthreads > 0).", None, minimum=1, resume="applied"
    )
    test_input: int = doc(
        "Preprocessed examples written to data_loader_testing/ when a run starts (--n_examples overrides).",
        1,
        minimum=0,
        resume="applied",
    )
    compile: bool | Literal["default", "reduce-overhead", "max-autotune"] = doc(
        "Compile the network with torch.compile (true or a compile mode); the first epoch pays the compilation.",
        False,
        resume="applied",
    )
    channels_last: bool = doc(
        "Channels-last memory layout for network and inputs (faster convolutions with AMP).", False, resume="applied"
    )
    augment_on: str = doc(
        "Where the random augmentations run: 'loader' (the loader workers, on the CPU) or 'device' (the training "
        "process, on each batch once it is on the training device, so a node with few CPU cores per GPU is not "
        "starved); the workers then load, crop and pad only. Same seeds, same samples either way.",
        "loader",
        choices=("loader", "device"),
        resume="applied",
    )
    validation_interval: int | None = doc(
        "Full-volume validation Dice (original space, `full_dice*` log columns) every N epochs; null: every epoch "
        "while that costs under 10% of an epoch's time, else as often as keeps it there.",
        None,
        minimum=1,
        resume="applied",
    )
    seed: int | None = doc("Random seed; null picks one and records it in the log. --seed overrides it.", None)
    deterministic: bool = doc("Ask torch for deterministic algorithms (slower on GPU).", False, resume="applied")


@dataclass
class CrossValidationConfig:
    """The `cross_validation` section: k-fold splitting of training_filenames."""

    n_folds: int = doc("Number of folds.", 5, minimum=2)
    random_seed: int = doc("Seed of the split.", 25)
    stratify: str | None = doc("A case key whose values are balanced across folds (e.g. 'site').", None)
    validation_fraction: float | None = doc(
        "Hold back this share of each fold's training cases for model selection; the fold's held-out cases are then "
        "only predicted and scored (group `heldout`). null: the held-out cases select the best epoch too.",
        None,
        minimum=0.01,
        maximum=0.5,
    )


@dataclass
class ClusterConfig:
    """The `cluster` section: resources of the SLURM array job written by --setup_crossval_only."""

    gpus: int = doc(
        "Devices per node of a fold task (--gres=gpu:N; npu:N for training.device 'npu'; with 'auto', only when "
        "sinfo lists GPUs); over 1, torchrun (DDP).",
        1,
        minimum=0,
    )
    nodes: int = doc(
        "Nodes per fold task; over 1, `srun torchrun` with a c10d rendezvous on the first node.", 1, minimum=1
    )
    cpus: int = doc("CPUs per node of a fold task; loader workers per process = cpus / gpus - 1.", 8, minimum=1)
    mem: str = doc(
        "Memory per fold task, in SLURM's notation (e.g. 32G, 4000M).",
        "32G",
        pattern=r"[0-9]+[KMGTkmgt]?",
        expect="a whole number with an optional unit K, M, G or T",
    )
    time: str | int = doc(
        "Time limit per fold task: minutes (a number), or D-HH:MM:SS; a cut-off fold resumes when rerun.",
        "2-00:00:00",
        minimum=1,
        pattern=r"([0-9]+-)?[0-9]+(:[0-9]+){0,2}|UNLIMITED|unlimited|INFINITE|infinite",
        expect="minutes, [D-]HH:MM:SS or another SLURM time format",
    )
    partition: str | None = doc(
        "SLURM partition, or several separated by commas (null: the cluster's default).",
        None,
        pattern=r"[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*",
        expect="partition names of letters, digits, '_', '.' and '-', separated by commas",
    )
    account: str | None = doc(
        "SLURM account to charge (null: your default).",
        None,
        pattern=r"[A-Za-z0-9_.-]+",
        expect="letters, digits, '_', '.' and '-'",
    )
    requeue_on_timeout: bool = doc("Requeue a fold task shortly before its time limit so it resumes by itself.", True)
    requeue_signal_seconds: int = doc("How long before the time limit the requeue signal comes.", 300, minimum=30)
    sbatch_options: list[str] = doc(
        "Extra #SBATCH options, e.g. ['--qos=long', '--constraint=a100'] (one option each, no spaces or quotes).",
        [],
        pattern=r"--[A-Za-z][A-Za-z0-9-]*(=[A-Za-z0-9_.,:@/+%=&|!*\[\]-]+)?",
        expect="one --option or --option=value without spaces, quotes or shell characters",
    )
    setup: list[str] = doc(
        "Shell lines run before training, e.g. ['module load cuda', 'source venv/bin/activate']; written into the "
        "script as they are (review a shared config's setup before you submit it), one line each.",
        [],
        pattern=r"[^\x00-\x1f\x7f]*",
        expect="one line (no newline or other control character)",
    )


SPLIT_BLOCKS = ("training", "validation")  # dataset blocks whose keys apply to one split only


@dataclass
class MachineConfig:
    """3DUnetCNN's machine config (`unet3d-train --machine_config_filename F`): how a run executes on this machine.
    A key given replaces its command-line flag."""

    n_workers: int | None = doc("Data loader workers (replaces --nthreads).", None, minimum=0)
    n_gpus: int | None = doc("Devices to train on, 0 for the CPU (replaces --n_devices).", None, minimum=0)
    pin_memory: bool | None = doc("Copy batches through page-locked memory (replaces --pin_memory).", None)
    use_multiprocessing: bool | None = doc(
        "Loader workers as processes (true) or as threads of the training process (false: --thread_workers).", None
    )


def applied_on_resume() -> set[str]:
    """The dotted keys whose new value a resumed run takes without asking: those that only say how long to train,
    what to keep and how to report (marked `resume="applied"` above, and every key of RESUME_APPLIED_SECTIONS)."""
    return {
        f"{section}.{f.name}"
        for section, record in SECTION_RECORDS.items()
        for f in fields(record)
        if f.metadata.get("resume") == "applied"
    }


SECTION_RECORDS: dict[str, type] = {
    "dataset": DatasetConfig,
    "training": TrainingConfig,
    "cross_validation": CrossValidationConfig,
    "cluster": ClusterConfig,
}
NAMED_SECTIONS: dict[str, str] = {
    "model": "Network from monai.networks.nets: `name` plus its constructor arguments.",
    "optimizer": "Optimizer from torch.optim: `name` plus its arguments (lr, weight_decay, ...).",
    "loss": "Loss from monai.losses, then torch.nn: `name` plus its arguments; sigmoid/softmax set the activation.",
    "scheduler": "Optional scheduler from torch.optim.lr_scheduler; `step`: 'epoch' (default) or 'iteration'; "
    "ReduceLROnPlateau follows `monitor` (a log column, default val_loss).",
    "inference": "Optional inferer from monai.inferers (e.g. SlidingWindowInferer with roi_size).",
}
REQUIRED_SECTIONS = ("model", "optimizer", "loss")
RESUME_APPLIED_SECTIONS = ("cluster", "inference")  # where to run and how to infer: every key applies on resume
NOTE_SECTIONS: dict[str, str] = {  # kept in the config for people to read; nothing reads them
    "planned": "Written by `unet3d-plan`: the reason for each planned value (and the fingerprint's file); not read.",
}


@dataclass
class Config:
    """A whole, validated experiment config. `raw` is the normalized JSON that reproduces it exactly."""

    model: NamedSpec
    optimizer: NamedSpec
    loss: NamedSpec
    dataset: DatasetConfig
    training: TrainingConfig
    scheduler: NamedSpec | None = None
    inference: NamedSpec | None = None
    cross_validation: CrossValidationConfig | None = None
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    groups: dict[str, list[Case]] = field(default_factory=dict)
    source: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, DatasetConfig] = field(default_factory=dict)  # `dataset.training`/`.validation` merged, typed

    @property
    def labels(self) -> list[int | list[int]]:
        return list(self.dataset.labels or [])

    @property
    def regions(self) -> list[tuple[int, ...]]:
        return self.dataset.regions

    @property
    def region_names(self) -> list[str]:
        return self.dataset.region_names

    def cases_of(self, group: str, option: str = "--group") -> list[Case]:
        """The cases of `<group>_filenames`; a ConfigError naming the groups the config has (and the nearest)."""
        if group not in self.groups:
            from unet3d.registry import suggest

            have = ", ".join(f"{g}_filenames" for g in self.groups) or "none"
            where = f" {self.source}" if self.source is not None else ""
            raise ConfigError(
                f"{option} {group}: the config{where} has no {group}_filenames{suggest(group, self.groups)} "
                f"(groups there: {have})"
            )
        return self.groups[group]

    def dataset_for(self, split: str) -> DatasetConfig:
        """The dataset settings of one split ('training' or 'validation', which prediction uses too): the top-level
        keys with the split's block on top, or the dataset section itself when the split has no block."""
        return self.splits.get(split, self.dataset)

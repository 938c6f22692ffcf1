"""`unet3d-train`: train one model, or every fold of a cross-validation, from a JSON config.

Flags follow 3DUnetCNN's train script. Rerunning the same command resumes where it stopped; raising
`training.n_epochs` extends a finished run.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from unet3d.cli.common import (
    EXIT_FAILURE,
    EXIT_OK,
    add_device_arguments,
    add_overrides_argument,
    check_inputs_exist,
    run_command,
    setup_logging,
)
from unet3d.errors import ConfigError, UserError

log = logging.getLogger("unet3d")


# The paths a run reads, refused at once when they do not exist (before the library is imported).
INPUTS = {
    "config_filename": "config",
    "pretrained_model_filename": "checkpoint",
    "machine_config_filename": "machine config",
}


def build_parser() -> argparse.ArgumentParser:
    """The command line of `unet3d-train` (its flags are documented in the README's command tables)."""
    parser = argparse.ArgumentParser(prog="unet3d.cli.train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config_filename", required=True, type=Path, help="experiment config (JSON)")
    parser.add_argument(
        "--output_dir",
        type=Path,
        help="parent of the work dir <output_dir>/<config file name without .json>/ (default: the config's folder)",
    )
    parser.add_argument(
        "--setup_crossval_only",
        action="store_true",
        help="validate the data and write splits.json and the fold configs; train nothing",
    )
    parser.add_argument(
        "--summary",
        action="store_true",
        help="write cv_summary.csv from the folds finished so far and name the missing ones; train nothing",
    )
    parser.add_argument(
        "--fold",
        type=str,
        action="append",
        metavar="K",
        help="train only these folds (1-based; repeat or give a list such as 1,3)",
    )
    parser.add_argument(
        "--pretrained_model_filename",
        type=Path,
        help="initialise a new run from these weights (layers that match by name and shape)",
    )
    parser.add_argument(
        "--accept_config_changes",
        action="store_true",
        help="resume a run although the config changed in keys that change what the model learns or sees (model, "
        "loss, optimizer, scheduler, preprocessing, cases); each change is recorded in train.log",
    )
    parser.add_argument(
        "--update_fold_configs",
        action="store_true",
        help="cross-validation: write the fold configs anew from a changed experiment config (they are written once, "
        "and a difference is refused otherwise); each difference is logged",
    )
    parser.add_argument("--batch_size", type=int, help="override training.batch_size")
    parser.add_argument("--seed", type=int, help="random seed (overrides training.seed)")
    add_overrides_argument(parser)
    parser.add_argument("--debug", action="store_true", help="verbose log and third-party warnings")
    parser.add_argument(
        "--nthreads", type=int, default=0, help="data loader worker processes (default 0: load in the training process)"
    )
    add_device_arguments(parser)
    parser.add_argument(
        "--n_devices",
        "--ngpus",
        dest="n_devices",
        type=int,
        default=1,
        help="devices of the --device kind to train on (default 1; 0 forces the CPU; over 1, the command relaunches "
        "itself under torchrun with one process per device); --ngpus is the same flag",
    )
    parser.add_argument(
        "--dist_backend",
        help="torch.distributed backend over several devices (default by device: nccl for cuda, hccl for npu, xccl "
        "for xpu, gloo for the CPU)",
    )
    parser.add_argument(
        "--thread_workers",
        action="store_true",
        help="run the --nthreads loader workers as threads of the training process instead of processes (no copy "
        "of the in-memory cache per worker)",
    )
    parser.add_argument("--pin_memory", action="store_true", help="pin loader memory for faster copies to the device")
    parser.add_argument(
        "--machine_config_filename",
        type=Path,
        help="JSON with n_workers, n_gpus, pin_memory, use_multiprocessing (replace --nthreads, --n_devices, "
        "--pin_memory, --thread_workers)",
    )
    parser.add_argument(
        "--n_examples",
        type=int,
        help="write this many preprocessed input/target pairs to <work dir>/data_loader_testing/",
    )
    return parser


def parse_overrides(items: Sequence[str], batch_size: int | None, device: str | None = None) -> dict[str, object]:
    """`--set` assignments, plus `--batch_size` as training.batch_size and `--device` as training.device."""
    from unet3d.config.load import parse_assignments

    overrides = parse_assignments(list(items))
    if batch_size is not None:
        overrides["training.batch_size"] = batch_size
    if device is not None:
        overrides["training.device"] = device
    return overrides


def parse_folds(values: Sequence[str] | None) -> list[int] | None:
    """`--fold 1 --fold 3,4` → [1, 3, 4]."""
    if not values:
        return None
    try:
        return [int(v) for value in values for v in value.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--fold: expected fold numbers such as 1 or 1,3, got {values}") from None


def wanted_device(args: argparse.Namespace) -> str:
    """The device the run asks for: --device, else the config's training.device ('auto' when the config cannot be
    read: the run itself reports why)."""
    from unet3d.config.load import load_config

    if args.device is not None:
        return args.device
    try:
        return load_config(args.config_filename, parse_overrides(args.overrides, args.batch_size)).training.device
    except UserError:
        return "auto"


def launch_processes(args: argparse.Namespace, argv: Sequence[str], n_devices: int) -> None:
    """With more than one device wanted, outside torchrun: relaunch under torchrun when torch sees that many devices of
    the wanted kind; refuse when a named device has fewer ('auto' trains on one, with a warning)."""
    if n_devices <= 1 or "WORLD_SIZE" in os.environ or args.setup_crossval_only or args.summary:
        return
    from unet3d.devices import device_count, device_type, torch_sees

    name = wanted_device(args)
    kind = device_type(name)
    if kind != "cpu" and device_count(kind) >= n_devices:
        relaunch_under_torchrun(n_devices, argv)  # replaces this process
    elif name not in ("auto", "cpu"):
        raise ConfigError(f"--n_devices {n_devices}: {n_devices} {kind} devices asked for, but {torch_sees()}")


def relaunch_under_torchrun(n_devices: int, argv: Sequence[str]) -> None:
    """Replace this process by torchrun (`unet3d.cli.launch --standalone --nproc_per_node N -m unet3d.cli.train
    ARGS`), one process per device."""
    command = [
        sys.executable,
        "-m",
        "unet3d.cli.launch",
        "--standalone",
        f"--nproc_per_node={n_devices}",
        "-m",
        "unet3d.cli.train",
        *argv,
    ]
    log.info("launching %d processes: %s", n_devices, " ".join(command[1:]))
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run the experiment; returns the exit code (0 ok, 1 failure, 2 bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    setup_logging(args.debug)
    checked = run_command(lambda: check_inputs_exist(args, INPUTS) or EXIT_OK)
    if checked != EXIT_OK:
        return checked

    # The library is imported once the work begins, so that --help and a wrong flag answer at once.
    from unet3d.devices import check_backend
    from unet3d.experiment.run import read_machine_config, run_experiment
    from unet3d.runtime import is_main_process, shutdown_distributed
    from unet3d.training.options import RunOptions

    def body() -> int:
        n_workers, n_devices, pin_memory = args.nthreads, args.n_devices, args.pin_memory
        thread_workers = args.thread_workers
        if args.machine_config_filename is not None:
            machine = read_machine_config(args.machine_config_filename)
            n_workers = n_workers if machine.n_workers is None else machine.n_workers
            n_devices = n_devices if machine.n_gpus is None else machine.n_gpus
            pin_memory = pin_memory if machine.pin_memory is None else machine.pin_memory
            if machine.use_multiprocessing is not None:
                thread_workers = not machine.use_multiprocessing
        if n_devices < 0 or n_workers < 0:
            raise ConfigError(
                f"--{'n_devices' if n_devices < 0 else 'nthreads'}: expected 0 or more, got {min(n_devices, n_workers)}"
            )
        check_backend(args.dist_backend)
        launch_processes(args, argv, n_devices)
        options = RunOptions(
            n_devices=n_devices,
            dist_backend=args.dist_backend,
            n_workers=n_workers,
            thread_workers=thread_workers,
            pin_memory=pin_memory,
            seed=args.seed,
            pretrained_model_filename=args.pretrained_model_filename,
            n_examples=args.n_examples,
            accept_config_changes=args.accept_config_changes,
            update_fold_configs=args.update_fold_configs,
        )
        result = run_experiment(
            args.config_filename,
            args.output_dir,
            options,
            overrides=parse_overrides(args.overrides, args.batch_size, args.device),
            folds=parse_folds(args.fold),
            setup_crossval_only=args.setup_crossval_only,
            summary_only=args.summary,
        )
        if result.failed:
            failed = result.cross_validation.failed
            log.error("folds %s failed: %s", sorted(failed), "; ".join(f"fold {k}: {m}" for k, m in failed.items()))
            return EXIT_FAILURE
        if is_main_process():
            print(f"results in {result.work_dir}")
        return EXIT_OK

    try:
        return run_command(body)
    finally:
        shutdown_distributed()


if __name__ == "__main__":
    raise SystemExit(main())

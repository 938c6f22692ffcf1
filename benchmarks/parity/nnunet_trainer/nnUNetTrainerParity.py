"""nnU-Net's default trainer at the parity benchmark's budget; imported by nnU-Net through `nnUNet_extTrainer`.

Runs inside nnU-Net's own virtual environment, never in unet3d's. The budget comes from environment variables that
`benchmarks/nnunet_parity.py` sets: PARITY_EPOCHS, PARITY_ITERATIONS and PARITY_VAL_ITERATIONS. Everything else
(network, loss, augmentation, oversampling, schedule) is nnU-Net's default. Mirroring stays on in training and is
switched off for the validation predictions, as in unet3d's recipe (no test-time augmentation).
"""

import os

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerParity(nnUNetTrainer):  # nnU-Net finds trainers by this class name
    def __init__(
        self, plans: dict, configuration: str, fold: int, dataset_json: dict, device: torch.device | None = None
    ):
        super().__init__(plans, configuration, fold, dataset_json, device or torch.device("cpu"))
        self.num_epochs = int(os.environ["PARITY_EPOCHS"])
        self.num_iterations_per_epoch = int(os.environ["PARITY_ITERATIONS"])
        self.num_val_iterations_per_epoch = int(os.environ["PARITY_VAL_ITERATIONS"])

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):  # nnU-Net's method name
        configured = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        self.inference_allowed_mirroring_axes = None
        return configured

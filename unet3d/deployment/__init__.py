"""Deployment: a trained network for use outside unet3d.

`export` writes TorchScript or ONNX with a sidecar JSON that says how to preprocess and decode (what
`examples/deploy_onnx` runs on); `bundle` writes a MONAI bundle, which `python -m monai.bundle run`, MONAI Label and
MONAI Deploy take as it is.
"""

from unet3d.deployment.export import (
    ExportResult,
    channel_schemes,
    export_model,
    inferer_description,
    patch_size,
    sidecar,
)

__all__ = ["ExportResult", "channel_schemes", "export_model", "inferer_description", "patch_size", "sidecar"]

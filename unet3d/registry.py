"""Closed name tables: the only way a config turns a string into a class.

Each config slot (model, loss, optimizer, ...) searches a fixed list of namespaces in a fixed order and accepts only
classes of the expected kind. Nothing is imported from a dotted path and nothing is evaluated, so a config can never
reach code outside these tables. Unknown names and unknown keyword arguments get "did you mean" suggestions.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from types import ModuleType

from unet3d.errors import ConfigError


@dataclass(frozen=True)
class Namespace:
    """One searchable namespace: a module and a predicate that says which of its attributes are eligible."""

    module: Callable[[], ModuleType]
    accepts: Callable[[object], bool]
    label: str


def _is_subclass(base_getter: Callable[[], type | tuple[type, ...]]) -> Callable[[object], bool]:
    return lambda obj: inspect.isclass(obj) and issubclass(obj, base_getter())


def _monai_nets() -> ModuleType:
    import monai.networks.nets

    return monai.networks.nets


def _monai_losses() -> ModuleType:
    import monai.losses

    return monai.losses


def _torch_nn() -> ModuleType:
    import torch.nn

    return torch.nn


def _torch_optim() -> ModuleType:
    import torch.optim

    return torch.optim


def _torch_schedulers() -> ModuleType:
    import torch.optim.lr_scheduler

    return torch.optim.lr_scheduler


def _monai_inferers() -> ModuleType:
    import monai.inferers

    return monai.inferers


def _monai_intensity_transforms() -> ModuleType:
    import monai.transforms.intensity.dictionary

    return monai.transforms.intensity.dictionary


def _monai_spatial_transforms() -> ModuleType:
    import monai.transforms.spatial.dictionary

    return monai.transforms.spatial.dictionary


def _monai_croppad_transforms() -> ModuleType:
    import monai.transforms.croppad.dictionary

    return monai.transforms.croppad.dictionary


def _monai_smooth_field_transforms() -> ModuleType:
    import monai.transforms.smooth_field.dictionary

    return monai.transforms.smooth_field.dictionary


def _own_transforms() -> ModuleType:
    import unet3d.normalization

    return unet3d.normalization


def _module_base() -> type:
    import torch.nn

    return torch.nn.Module


def _loss_base() -> type:
    import torch.nn.modules.loss

    return torch.nn.modules.loss._Loss


def _optimizer_base() -> type:
    import torch.optim

    return torch.optim.Optimizer


def _scheduler_base() -> tuple[type, ...]:
    from torch.optim import lr_scheduler

    return (lr_scheduler.LRScheduler, lr_scheduler.ReduceLROnPlateau)


def _inferer_base() -> type:
    import monai.inferers

    return monai.inferers.Inferer


def _map_transform_base() -> type:
    import monai.transforms

    return monai.transforms.MapTransform


# Schedulers that need Python callables or other scheduler objects cannot be described in JSON.
_UNBUILDABLE_SCHEDULERS = {"LRScheduler", "LambdaLR", "MultiplicativeLR", "ChainedScheduler", "SequentialLR"}


def _is_buildable_scheduler(obj: object) -> bool:
    return _is_subclass(_scheduler_base)(obj) and obj.__name__ not in _UNBUILDABLE_SCHEDULERS


_VOLUME_INFERERS = {"SimpleInferer", "SlidingWindowInferer", "SlidingWindowInfererAdapt", "SliceInferer"}


def _is_safe_inferer(obj: object) -> bool:
    return _is_subclass(_inferer_base)(obj) and obj.__name__ in _VOLUME_INFERERS


def _is_torch_loss(obj: object) -> bool:
    return _is_subclass(_module_base)(obj) and getattr(obj, "__name__", "").endswith("Loss")


NAMESPACES: dict[str, tuple[Namespace, ...]] = {
    "model": (Namespace(_monai_nets, _is_subclass(_module_base), "monai.networks.nets"),),
    "loss": (
        Namespace(_monai_losses, _is_subclass(_loss_base), "monai.losses"),
        Namespace(_torch_nn, _is_torch_loss, "torch.nn"),
    ),
    "optimizer": (Namespace(_torch_optim, _is_subclass(_optimizer_base), "torch.optim"),),
    "scheduler": (Namespace(_torch_schedulers, _is_buildable_scheduler, "torch.optim.lr_scheduler"),),
    # Only the volume inferers: others (PatchInferer's merger_cls, ...) resolve dotted paths given as strings.
    "inferer": (Namespace(_monai_inferers, _is_safe_inferer, "monai.inferers"),),
    # Only the intensity, spatial and crop/pad families: the utility and I/O transforms take callables or resolve
    # dotted paths (Lambdad, LoadImaged's reader), which would let a config run arbitrary code.
    "transform": (
        Namespace(_monai_intensity_transforms, _is_subclass(_map_transform_base), "monai.transforms (intensity)"),
        Namespace(_monai_spatial_transforms, _is_subclass(_map_transform_base), "monai.transforms (spatial)"),
        Namespace(_monai_croppad_transforms, _is_subclass(_map_transform_base), "monai.transforms (crop/pad)"),
        Namespace(_monai_smooth_field_transforms, _is_subclass(_map_transform_base), "monai.transforms (smooth field)"),
        Namespace(_own_transforms, _is_subclass(_map_transform_base), "unet3d.normalization"),
    ),
}


_BASE_CLASSES = {"Optimizer", "Inferer", "MapTransform", "LRScheduler", "_Loss"}


@cache
def available(kind: str) -> dict[str, type]:
    """All names a config may use for `kind`, first namespace wins on a clash."""
    table: dict[str, type] = {}
    for namespace in NAMESPACES[kind]:
        module = namespace.module()
        for name in dir(module):
            if name.startswith("_") or name in table:
                continue
            obj = getattr(module, name)
            if namespace.accepts(obj) and not inspect.isabstract(obj) and obj.__name__ not in _BASE_CLASSES:
                table[name] = obj
    return table


def suggest(name: str, choices: Iterable[str], n: int = 3) -> str:
    """A ' did you mean ...?' suffix for an error message, or '' when nothing is close."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    matches = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)
    if not matches:
        return ""
    return "; did you mean " + " or ".join(repr(lowered[m]) for m in matches) + "?"


def lookup(kind: str, name: object, where: str) -> type:
    """The class named `name` for config slot `kind`; a ConfigError naming `where` otherwise."""
    if not isinstance(name, str) or not name:
        article = "an" if kind[0] in "aeiou" else "a"
        raise ConfigError(f"{where}: expected {article} {kind} name (a string), got {name!r}")
    table = available(kind)
    if name in table:
        return table[name]
    searched = ", ".join(ns.label for ns in NAMESPACES[kind])
    raise ConfigError(f"{where}: unknown {kind} {name!r} (searched {searched}){suggest(name, table)}")


def _wants_callable(parameter: inspect.Parameter) -> bool:
    """Whether a constructor argument takes a function and no string (annotated Callable without str, or defaulting
    to a function): a string there would only fail when the object is used, in the middle of a run."""
    annotation = parameter.annotation
    text = (
        "" if annotation is inspect.Parameter.empty else annotation if isinstance(annotation, str) else repr(annotation)
    )
    if "str" in text:
        return False
    return "Callable" in text or (callable(parameter.default) and not isinstance(parameter.default, type))


def check_kwargs(cls: type, kwargs: dict, where: str, supplied: Iterable[str] = ()) -> None:
    """Check config kwargs against the constructor signature, so errors surface before any object is built.

    `supplied` names the arguments the program fills in itself (e.g. ``params`` of an optimizer); the config may not
    set them, and they are not reported as missing.
    """
    supplied = set(supplied)
    signature = inspect.signature(cls)
    parameters = signature.parameters
    takes_var_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    named = [n for n, p in parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    for key in kwargs:
        if key in supplied:
            raise ConfigError(f"{where}.{key}: is set by unet3d and cannot be given in the config")
        if key not in parameters and not takes_var_kwargs:
            raise ConfigError(f"{where}.{key}: {cls.__name__} has no argument {key!r}{suggest(key, named)}")
    for key, value in kwargs.items():
        if key in parameters and isinstance(value, str) and _wants_callable(parameters[key]):
            raise ConfigError(
                f"{where}.{key}: {cls.__name__} expects a function here, not the string {value!r}; a config cannot "
                f"name one (it never imports or evaluates code): remove {key!r} to use the default"
            )
    missing = [
        n
        for n, p in parameters.items()
        if p.default is inspect.Parameter.empty
        and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        and n not in kwargs
        and n not in supplied
    ]
    if missing:
        raise ConfigError(f"{where}: {cls.__name__} needs {', '.join(map(repr, missing))}")

"""The label regions a config declares: each output channel is a set of label values (`dataset.labels`; nested, as
BraTS's whole tumour ⊃ core ⊃ enhancing, with `setup_label_hierarchy`), named by its values joined with '+'. Config,
data, training, inference and evaluation all read them from here (`Config.regions`, `Config.region_names`)."""

from __future__ import annotations

from collections.abc import Sequence

LabelSpec = Sequence[int | Sequence[int]]


def label_regions(labels: LabelSpec, hierarchy: bool = False) -> list[tuple[int, ...]]:
    """The set of label values that make each channel, in channel order (without any background channel)."""
    regions = [tuple(v) if isinstance(v, (list, tuple)) else (v,) for v in labels]
    if hierarchy:
        regions = [tuple(value for region in regions[i:] for value in region) for i in range(len(regions))]
    return regions


def region_names(regions: Sequence[Sequence[int]]) -> list[str]:
    """Each channel's label values joined with '+', as log and metric columns name them:
    [(2, 1, 4), (1, 4), (4,)] → ['2+1+4', '1+4', '4']."""
    return ["+".join(str(value) for value in region) for region in regions]


def declared_values(labels: LabelSpec) -> set[int]:
    """Every label value the config declares, plus 0 (background)."""
    return {0} | {value for region in label_regions(labels) for value in region}

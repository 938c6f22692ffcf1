"""The geometry of synthetic cases: axis orientation codes and random affines (flipped, permuted, oblique axes)."""

from __future__ import annotations

import numpy as np

ORIENTATIONS = ("RAS", "LPS", "LAS", "PSR")
"""Axis orientation codes drawn by :func:`random_affine` and cycled through by :func:`write_dataset`."""

# Letter -> (world axis in RAS+ space, direction of the voxel axis along it).
_AXIS_CODES = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}


def _parse_orientation(orientation: str) -> list[tuple[int, float]]:
    code = orientation.upper()
    if len(code) != 3 or any(c not in _AXIS_CODES for c in code):
        raise ValueError(f"orientation must be 3 letters among R/L, A/P, S/I, got {orientation!r}")
    axes = [_AXIS_CODES[c] for c in code]
    if len({axis for axis, _ in axes}) != 3:
        raise ValueError(f"orientation must use each of R/L, A/P, S/I once, got {orientation!r}")
    return axes


def random_affine(
    spacing: tuple[float, float, float],
    rng: np.random.Generator,
    orientation: str | None = None,
    oblique_degrees: float = 0.0,
) -> np.ndarray:
    """4x4 affine with the given voxel spacing and an axis orientation code such as 'RAS', 'LPS', 'LAS', 'PSR'.

    ``spacing[i]`` is the size of voxel axis ``i`` (the norm of column ``i``); ``orientation[i]`` is the direction
    that voxel axis ``i`` points to, in nibabel's :func:`~nibabel.orientations.aff2axcodes` convention (axis
    permutations and flips allowed). When ``orientation`` is None, one of :data:`ORIENTATIONS` is drawn at random.
    ``oblique_degrees`` tilts the voxel axes by that angle about a random world axis (an oblique acquisition). The
    origin gets a random offset.
    """
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive numbers, got {tuple(spacing)}")
    if orientation is None:
        orientation = ORIENTATIONS[int(rng.integers(len(ORIENTATIONS)))]
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for i, (world_axis, sign) in enumerate(_parse_orientation(orientation)):
        affine[world_axis, i] = sign * float(spacing[i])
    if oblique_degrees:
        affine[:3, :3] = _axis_rotation(rng, np.deg2rad(oblique_degrees)) @ affine[:3, :3]
    affine[:3, 3] = np.round(rng.uniform(-100.0, 100.0, size=3), 2)
    return affine


def _axis_rotation(rng: np.random.Generator, angle: float) -> np.ndarray:
    """A rotation by ``angle`` radians about a random world axis (x, y or z)."""
    axis = int(rng.integers(3))
    i, j = [a for a in range(3) if a != axis]
    rotation = np.eye(3)
    rotation[i, i] = rotation[j, j] = np.cos(angle)
    rotation[i, j], rotation[j, i] = -np.sin(angle), np.sin(angle)
    return rotation

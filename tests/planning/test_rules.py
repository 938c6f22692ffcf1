"""The planner's rules (unet3d/planning/rules.py): spacing, network, patch under a budget, normalization."""

import math

import numpy as np
import pytest

from unet3d.planning import rules


def test_isotropic_data_takes_the_median_spacing():
    spacing, why = rules.target_spacing(np.array([[1.0, 1.0, 1.2], [0.8, 1.0, 1.0], [1.0, 0.9, 1.0]]))
    assert spacing == [1.0, 1.0, 1.0]
    assert why.startswith("median voxel spacing")


def test_the_coarse_axis_of_anisotropic_data_stays_coarse():
    spacings = np.array([[0.8, 0.8, 5.0]] * 8 + [[0.7, 0.7, 4.0], [0.9, 0.9, 6.0]])
    spacing, why = rules.target_spacing(spacings)
    assert spacing[:2] == [0.8, 0.8]
    assert spacing[2] == pytest.approx(4.9)  # 10th percentile of the z spacings, far from isotropic 0.8
    assert "axis 2" in why and "anisotropic" in why


def test_strides_and_kernels_follow_thick_slices():
    kernels, strides = rules.topology([128, 128, 24], [0.8, 0.8, 5.0])
    assert strides[1] == [2, 2, 1] and strides[2] == [2, 2, 1]  # in-plane first, until its spacing catches up
    assert kernels[0] == [3, 3, 1]  # no convolution across 5 mm slices at full resolution
    z_spacing = 5.0
    in_plane = 0.8
    for stride, kernel in zip(strides, kernels, strict=True):
        in_plane *= stride[0]
        z_spacing *= stride[2]
        assert kernel[2] == (3 if z_spacing <= 2 * min(in_plane, z_spacing) else 1)
    assert any(stride[2] == 2 for stride in strides)  # z is halved once the in-plane spacing is within 2x
    assert all(
        n // t >= rules.MIN_FEATURE_MAP for n, t in zip([128, 128, 24], rules.total_strides(strides), strict=True)
    )


def test_isotropic_topology_halves_every_axis_down_to_the_smallest_feature_map():
    kernels, strides = rules.topology([64, 64, 64], [1.0, 1.0, 1.0])
    assert strides == [[1, 1, 1]] + [[2, 2, 2]] * 4
    assert kernels == [[3, 3, 3]] * 5


def test_a_smaller_budget_gives_a_smaller_patch_that_fits_it():
    profile = rules.profile_for("gpu", 8.0)
    large = rules.plan_network([200, 200, 200], [1.0, 1.0, 1.0], profile)
    small = rules.plan_network([200, 200, 200], [1.0, 1.0, 1.0], rules.profile_for("gpu", 2.0))
    assert math.prod(small.patch) < math.prod(large.patch)
    for network, budget in ((large, 8.0), (small, 2.0)):
        assert network.memory_gb <= budget
        assert all(n % t == 0 for n, t in zip(network.patch, rules.total_strides(network.strides), strict=True))
    assert large.filters[0] == 32 and max(large.filters) == 320


def test_the_cpu_profile_caps_the_patch():
    network = rules.plan_network([300, 300, 300], [1.0, 1.0, 1.0], rules.profile_for("cpu", 64.0))
    assert math.prod(network.patch) <= 64**3
    assert network.filters[0] == 16


def test_no_patch_fits_a_tiny_budget():
    with pytest.raises(ValueError, match="no patch fits 1e-06 GB"):
        rules.plan_network([64, 64, 64], [1.0, 1.0, 1.0], rules.profile_for("gpu", 1e-6))


@pytest.mark.parametrize(
    ("name", "p00_5", "expected"),
    [
        ("CT", 0.0, True),
        ("ct_venous", 0.0, True),
        ("CTA contrast", 0.0, True),
        ("T1", -1000.0, False),
        ("ACTIVE", -1000.0, False),
        (None, -1024.0, True),
        (None, 0.0, False),
    ],
)
def test_ct_channels_by_name_or_by_air(name, p00_5, expected):
    assert rules.is_ct(name, {"image_p00_5": p00_5})[0] is expected


def test_an_unnamed_channel_mixing_ct_and_mr_is_not_planned_as_ct_and_says_which_scans():
    # Issue 24, item 3: two CTs outvoted an MR, whose voxels then saturated at the CT clip, without a word.
    stats = {"image_p00_5": -1000.0, "air_cases": ["ct_a", "ct_b"], "other_cases": ["mr_c"]}
    ct, why = rules.is_ct(None, stats)
    assert not ct
    assert why.startswith("WARNING: unnamed channel mixing scans with Hounsfield-unit air (ct_a, ct_b)")
    assert "and scans without (mr_c)" in why
    assert rules.is_ct(None, {"image_p00_5": -1000.0, "air_cases": ["a", "b"], "other_cases": []})[0]


def test_ct_channels_get_the_ct_scheme_with_the_foreground_statistics():
    pooled = [{"mean": 60.0, "std": 40.0, "p00_5": -80.0, "p99_5": 250.0}]
    name, kwargs, why = rules.normalization_schemes(["CT"], [{"image_p00_5": -1000.0, "zero_fraction": 0.0}], pooled)
    assert name == "CTNormalized"
    assert kwargs == {"lower": -80.0, "upper": 250.0, "mean": 60.0, "std": 40.0}
    assert "CT scheme" in why


def test_mixed_channels_get_one_scheme_each_and_mr_alone_uses_monai():
    pooled = [{"mean": 60.0, "std": 40.0, "p00_5": -80.0, "p99_5": 250.0}] * 2
    stats = [{"image_p00_5": -1000.0, "zero_fraction": 0.0}, {"image_p00_5": 0.0, "zero_fraction": 0.6}]
    name, kwargs, _ = rules.normalization_schemes(["CT", "PET"], stats, pooled)
    assert name == "ChannelNormalized"
    assert [s["scheme"] for s in kwargs["schemes"]] == ["ct", "zscore"]
    assert kwargs["schemes"][1]["nonzero"] is True
    name, kwargs, _ = rules.normalization_schemes(["T1", "T2"], [stats[1]] * 2, pooled)
    assert (name, kwargs) == ("NormalizeIntensityd", {"channel_wise": True, "nonzero": True})


def test_an_axis_that_stops_pooling_early_never_turns_the_others_kernels_to_1():
    # Issue 24, item 1: [112, 96, 20] at 3 mm planned Conv3d(kernel (1, 1, 3), stride (2, 2, 1)) in the bottleneck,
    # which skips 3 of 4 in-plane positions unfiltered.
    kernels, strides = rules.topology([112, 96, 20], [3.0, 3.0, 3.0])
    assert all(kernel == [3, 3, 3] for kernel in kernels)
    assert strides[-1] == [2, 2, 1]
    for kernel, stride in zip(kernels, strides, strict=True):
        assert not any(k == 1 and s == 2 for k, s in zip(kernel, stride, strict=True))


@pytest.mark.parametrize(
    ("name", "scheme"), [("noNorm", "none"), ("rescale_to_0_1", "rescale_to_0_1"), ("RGB_to_0_1", "rgb_to_0_1")]
)
def test_nnunet_s_channel_names_choose_its_schemes(name, scheme):
    # Issue 24, item 4: noNorm, rescale_to_0_1 and rgb_to_0_1 were planned as per-case z-score.
    stats = {"image_p00_5": 0.0, "zero_fraction": 0.0}
    pooled = {"p00_5": 0.0, "p99_5": 1.0, "mean": 0.5, "std": 0.2}
    normalization, kwargs, rule = rules.normalization_schemes([name, "T1"], [stats, stats], [pooled, pooled])
    assert normalization == "ChannelNormalized"
    assert kwargs["schemes"] == [{"scheme": scheme}, {"scheme": "zscore", "nonzero": False}]
    assert f"channel 0: {scheme} (channel named {name!r}" in rule

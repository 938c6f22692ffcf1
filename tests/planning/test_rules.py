"""The planner's rules (unet3d/planning/rules.py): spacing, network, patch under a budget, normalization."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from unet3d.planning import rules

ROOT = Path(__file__).resolve().parents[2]
PARITY = ROOT / "benchmarks" / "results" / "plan_parity.json"


def test_isotropic_data_takes_the_median_spacing():
    shapes = np.array([[100, 100, 100]] * 3)
    spacing, why = rules.target_spacing(np.array([[1.0, 1.0, 1.2], [0.8, 1.0, 1.0], [1.0, 0.9, 1.0]]), shapes)
    assert spacing == [1.0, 1.0, 1.0]
    assert why.startswith("median voxel spacing")


def test_the_coarse_axis_of_thick_slices_takes_its_10th_percentile():
    spacings = np.array([[0.8, 0.8, 5.0]] * 8 + [[0.7, 0.7, 4.0], [0.9, 0.9, 6.0]])
    spacing, why = rules.target_spacing(spacings, np.array([[512, 512, 40]] * 10))
    assert spacing[:2] == [0.8, 0.8]
    assert spacing[2] == pytest.approx(4.9)  # 10th percentile of the z spacings, far from isotropic 0.8
    assert "axis 2" in why and "thick slices" in why


def test_a_coarse_axis_with_many_voxels_takes_the_median():
    # nnU-Net's second condition: 5 mm slices but as many voxels along z as in-plane are not "thin" data
    spacings = np.array([[0.8, 0.8, 5.0]] * 8 + [[0.7, 0.7, 4.0], [0.9, 0.9, 6.0]])
    spacing, why = rules.target_spacing(spacings, np.array([[100, 100, 100]] * 10))
    assert spacing == [0.8, 0.8, 5.0]
    assert "not thin in voxels" in why


def test_strides_and_kernels_follow_thick_slices():
    kernels, strides = rules.topology([128, 128, 24], [0.8, 0.8, 5.0])
    assert strides[1] == [2, 2, 1] and strides[2] == [2, 2, 1]  # in-plane first, until its spacing catches up
    assert kernels[0] == [3, 3, 1]  # no convolution across 5 mm slices at full resolution
    z_spacing, in_plane = 5.0, 0.8
    for stride, kernel in zip(strides[1:], kernels[:-1], strict=True):
        assert kernel[2] == (3 if z_spacing / min(in_plane, z_spacing) < 2 or kernel[2] == 3 else 1)
        in_plane *= stride[0]
        z_spacing *= stride[2]
    assert kernels[-1] == [3, 3, 3]  # the bottleneck convolves every axis
    assert any(stride[2] == 2 for stride in strides)  # z is halved once the in-plane spacing is within 2x
    assert all(
        n // t >= rules.MIN_FEATURE_MAP for n, t in zip([128, 128, 24], rules.total_strides(strides), strict=True)
    )


def test_isotropic_topology_halves_every_axis_down_to_the_smallest_feature_map():
    kernels, strides = rules.topology([64, 64, 64], [1.0, 1.0, 1.0])
    assert strides == [[1, 1, 1]] + [[2, 2, 2]] * 4
    assert kernels == [[3, 3, 3]] * 5


def test_a_lone_axis_is_halved_only_while_it_has_three_minimal_feature_maps():
    # a 6-slice slab: z never pools; y stops at 7 voxels; x alone (8 voxels, under 3 x 4) stops with it, as in
    # nnU-Net, instead of going on to a 4-voxel bottleneck on one axis
    kernels, strides = rules.topology([64, 56, 6], [0.8, 0.8, 5.0])
    assert rules.total_strides(strides) == [8, 8, 1]
    assert kernels[0] == [3, 3, 1]


def test_a_spacing_exactly_twice_the_finest_is_not_yet_convolved():
    kernels, strides = rules.topology([64, 64, 32], [1.0, 1.0, 2.0])
    assert kernels[0] == [3, 3, 1] and strides[1] == [2, 2, 1]
    assert kernels[1] == [3, 3, 3] and strides[2] == [2, 2, 2]


def test_the_patch_is_rounded_up_past_the_median_case():
    # the data set: a median case of 122 x 101 x 20 at 0.8 x 0.8 x 3 mm; nnU-Net plans 128 x 112 x 20
    network = rules.plan_network([122, 101, 20], [0.8, 0.8, 3.0], rules.profile_for("gpu", 8.0))
    assert network.patch == [128, 112, 20]
    assert all(n % t == 0 for n, t in zip(network.patch, rules.total_strides(network.strides), strict=True))
    assert "rounded up" in network.rule


def test_spare_memory_raises_the_batch_up_to_5_percent_of_the_data():
    profile = rules.profile_for("gpu", 8.0)
    few = rules.plan_network([36, 50, 35], [1.0, 1.0, 1.0], profile, n_cases=20)
    many = rules.plan_network([36, 50, 35], [1.0, 1.0, 1.0], profile, n_cases=260)
    assert few.patch == many.patch == [40, 56, 40]
    assert few.batch_size == 2  # 5% of 20 cases is under one batch of 2
    assert many.batch_size == round(0.05 * 260 * 36 * 50 * 35 / (40 * 56 * 40))
    assert rules.plan_network([36, 50, 35], [1.0, 1.0, 1.0], rules.profile_for("cpu", 8.0), 260).batch_size == 2


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
    with pytest.raises(rules.PlanError, match="--gpu_memory_gb: no patch fits 1e-06 GB"):
        rules.plan_network([64, 64, 64], [1.0, 1.0, 1.0], rules.profile_for("gpu", 1e-6))


def test_a_large_case_gets_a_low_resolution_suggestion():
    profile = rules.profile_for("gpu", 8.0)
    median, spacing = [512, 512, 400], [0.8, 0.8, 0.8]
    network = rules.plan_network(median, spacing, profile)
    lowres, why = rules.low_resolution(median, spacing, network, profile)
    assert lowres is not None and lowres.coverage < rules.LOWRES_COVERAGE
    assert math.prod(lowres.network.patch) / math.prod(lowres.median_shape) >= rules.LOWRES_COVERAGE * 0.99
    assert all(low > full for low, full in zip(lowres.spacing, spacing, strict=True))
    assert "unet3d-plan --spacing " + " ".join(f"{v:g}" for v in lowres.spacing) in why
    assert "no cascade" in why
    small = rules.plan_network([100, 100, 100], [1.0, 1.0, 1.0], profile)
    assert rules.low_resolution([100, 100, 100], [1.0, 1.0, 1.0], small, profile)[0] is None


def test_the_rules_plan_what_nnunet_planned_from_the_same_fingerprints():
    """nnU-Net 2.8.1's own planner, run by benchmarks/plan_parity.py on thirteen fingerprints (its result is kept in
    benchmarks/results/): the rules reproduce its spacing, patch, batch, strides, kernels and low-resolution plan."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from plan_parity import ALIKE, FINGERPRINTS, jittered_cases, unet3d_geometry
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    recorded = json.loads(PARITY.read_text())
    rows = recorded["fingerprints"]
    assert [row["data set"] for row in rows] == list(FINGERPRINTS)
    for index, row in enumerate(rows):
        spacing, shape, n_cases, _ = FINGERPRINTS[row["data set"]]
        cases = jittered_cases(spacing, shape, n_cases, recorded["seed"] + index, row["data set"] not in ALIKE)
        ours = unet3d_geometry(*cases)
        theirs = row["nnunet"]
        for item in ("patch", "batch", "strides", "kernels", "lowres_patch"):
            assert ours[item] == theirs[item], (row["data set"], item)
        for item in ("spacing", "lowres_spacing"):
            assert (ours[item] is None) == (theirs[item] is None), (row["data set"], item)
            if ours[item] is not None:
                assert ours[item] == pytest.approx(theirs[item], abs=1e-4), (row["data set"], item)
        # unet3d plans with the spacing it writes (4 decimals): a median can fall half a voxel apart
        assert ours["median_shape"] == pytest.approx(theirs["median_shape"], abs=0.5), row["data set"]


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

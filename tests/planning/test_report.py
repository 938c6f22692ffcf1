"""The data report (unet3d/planning/report.py): the cases that stand out."""

from unet3d.planning.fingerprint import CaseFingerprint, ChannelStats
from unet3d.planning.report import outliers, render


def case(
    case_id, spacing=(1.0, 1.0, 1.0), shape=(100, 100, 100), labelled=500, p99=300.0, orientation="RAS", darkest=-1000.0
):
    stats = ChannelStats(50.0, 20.0, -50.0, p99, darkest, 0.0)
    return CaseFingerprint(
        case_id, list(shape), list(spacing), orientation, [stats], {"1": labelled} if labelled else {}
    )


def test_a_usual_data_set_has_nothing_to_report():
    assert outliers([case(f"c{i}") for i in range(6)]) == []


def test_cases_far_from_the_others_are_named_with_their_numbers():
    cases = [case(f"c{i}") for i in range(8)] + [case("thick", spacing=(1.0, 1.0, 5.0)), case("none", labelled=0)]
    found = outliers(cases)
    assert "thick: spacing of axis 2 is 5 mm; the median case has 1 mm" in found
    assert "thick: extent of axis 2 is 500 mm; the median case has 100 mm" in found
    assert "none: label map is empty (no foreground)" in found


def test_intensities_are_compared_only_on_fixed_scale_channels():
    cases = [case(f"c{i}") for i in range(8)] + [case("bright", p99=3000.0)]
    assert outliers(cases) == []  # MR-like: scales differ per scan
    assert outliers(cases, fixed_scale_channels=[0]) == [
        "bright: channel 0 foreground 99.5th percentile is 3000; the median case has 300"
    ]


def test_orientation_notes():
    mostly = [case(f"c{i}") for i in range(5)] + [case("flipped", orientation="LPS")]
    assert outliers(mostly) == ["flipped: axes ordered LPS, most cases RAS (all are reoriented to RAS)"]
    mixed = [case(f"c{i}", orientation="RAS" if i % 2 else "LPS") for i in range(6)]
    assert outliers(mixed) == ["axes are ordered 2 ways (LPS 3, RAS 3); all are reoriented to RAS"]


def test_the_report_lists_table_findings_and_reasons():
    text = render([case("a"), case("b"), case("c")], {"dataset.spacing": "median"})
    assert text.startswith("3 cases\n")
    assert "no case stands out" in text
    assert "  dataset.spacing: median" in text


def test_a_slab_and_a_small_field_of_view_are_found_by_their_extent_per_axis():
    # Issue 24, item 5: the report compared total volume only; a 40 mm slab beside 336 mm scans passed.
    cases = [case(f"c{i}", shape=(336, 336, 336)) for i in range(6)] + [case("slab", shape=(336, 336, 40))]
    assert "slab: extent of axis 2 is 40 mm; the median case has 336 mm" in outliers(cases)


def test_scans_of_another_kind_in_a_channel_are_named_even_among_few_cases():
    # Issue 24, items 3 and 5: two CTs among three MRs passed, and with fewer than 3 cases nothing was compared.
    cases = [case(f"mr{i}", darkest=0.0) for i in range(3)] + [case("ct_a"), case("ct_b")]
    found = outliers(cases)
    assert found[:2] == [
        "ct_a: channel 0 has Hounsfield-unit air (CT), unlike 3 of 5 cases (darkest voxels -1000): a scan of another "
        "kind?",
        "ct_b: channel 0 has Hounsfield-unit air (CT), unlike 3 of 5 cases (darkest voxels -1000): a scan of another "
        "kind?",
    ]
    two = render([case("a"), case("b")], {})
    assert "2 cases: too few to compare them with each other" in two and "no case stands out" not in two
    assert any(line.startswith("ct_a: channel 0 has Hounsfield-unit air") for line in outliers(cases[2:4]))


def test_the_report_gives_the_spread_of_each_label_s_volume():
    text = render([case("a", labelled=132), case("b", labelled=48434), case("c", labelled=900)], {})
    assert "label 1: 132 to 48,434 mm³ (median 900) in 3 of 3 cases" in text

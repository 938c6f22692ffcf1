"""The data report (unet3d/planning/report.py): the cases that stand out."""

from unet3d.planning.fingerprint import CaseFingerprint, ChannelStats
from unet3d.planning.report import outliers, render


def case(case_id, spacing=(1.0, 1.0, 1.0), shape=(100, 100, 100), labelled=500, p99=300.0, orientation="RAS"):
    stats = ChannelStats(50.0, 20.0, -50.0, p99, -1000.0, 0.0)
    return CaseFingerprint(
        case_id, list(shape), list(spacing), orientation, [stats], {"1": labelled} if labelled else {}
    )


def test_a_usual_data_set_has_nothing_to_report():
    assert outliers([case(f"c{i}") for i in range(6)]) == []


def test_cases_far_from_the_others_are_named_with_their_numbers():
    cases = [case(f"c{i}") for i in range(8)] + [case("thick", spacing=(1.0, 1.0, 5.0)), case("none", labelled=0)]
    found = outliers(cases)
    assert "thick: spacing of axis 2 is 5 mm; the median case has 1 mm" in found
    assert "thick: volume is 5e+06 mm³; the median case has 1e+06 mm³" in found
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

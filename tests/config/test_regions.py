"""The label regions a config declares (unet3d/config/regions.py), and the one property every stage reads them by."""

from tests.conftest import tiny_config
from unet3d.config.load import parse_config
from unet3d.config.regions import declared_values, label_regions, region_names


def test_label_regions_plain():
    assert label_regions([2, 1, 4]) == [(2,), (1,), (4,)]


def test_label_regions_hierarchy_brats():
    assert label_regions([2, 1, 4], hierarchy=True) == [(2, 1, 4), (1, 4), (4,)]


def test_label_regions_nested():
    assert label_regions([[1, 2], 4]) == [(1, 2), (4,)]
    assert label_regions([[1, 2], 4], hierarchy=True) == [(1, 2, 4), (4,)]
    assert label_regions(((3,), [5, 6])) == [(3,), (5, 6)]


def test_declared_values_include_background():
    assert declared_values([[1, 2], 4]) == {0, 1, 2, 4}


def test_region_names_join_the_values_of_each_region():
    assert region_names([(2, 1, 4), (1, 4), (4,)]) == ["2+1+4", "1+4", "4"]


def test_a_config_holds_its_regions_and_their_names(tiny_data):
    folder, entries = tiny_data
    config = parse_config(tiny_config(entries), base=folder)  # labels [2, 1, 4] with the hierarchy
    assert config.regions == [(2, 1, 4), (1, 4), (4,)] and config.region_names == ["2+1+4", "1+4", "4"]
    flat = tiny_config(entries)
    flat["dataset"]["setup_label_hierarchy"] = False
    assert parse_config(flat, base=folder).regions == [(2,), (1,), (4,)]


def test_only_the_config_turns_labels_into_regions():
    from pathlib import Path

    package = Path(__file__).resolve().parents[2] / "unet3d"
    homes = {"config/regions.py", "config/schema.py", "data/labels.py"}  # data/labels checks a label spec
    others = [
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if str(p.relative_to(package)) not in homes and "label_regions(" in p.read_text()
    ]
    assert others == [], f"{others}: read config.regions / config.region_names instead"

"""The up-front checks of every file of every case (unet3d/data/checks.py)."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import SHAPE, SPACING, affine_of, save
from unet3d.config.cases import Case
from unet3d.data.checks import CaseInfo, check_case, check_cases
from unet3d.data.synthetic import write_case
from unet3d.errors import DataError
from unet3d.formats import AFFINE_TOLERANCE

BRATS = {0, 1, 2, 4}


def new_case(directory: Path, case_id: str = "c0", seed: int = 0, orientation: str = "RAS", **kwargs) -> Case:
    rng = np.random.default_rng(seed)
    entry = write_case(directory, case_id, SHAPE, SPACING, rng, orientation=orientation, **kwargs)
    label = directory / entry["label"] if "label" in entry else None
    return Case(images=[directory / p for p in entry["image"]], label=label, case_id=case_id)


def data_error(case: Case, labels=BRATS, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        check_case(case, labels, **kwargs)
    return str(info.value)


# --- check_case: one case ------------------------------------------------------------------------------------------


def test_good_case_info(tmp_path):
    case = new_case(tmp_path)
    info = check_case(case, BRATS)
    assert isinstance(info, CaseInfo)
    assert info.case_id == "c0"
    assert info.n_channels == 4
    assert info.shape == SHAPE
    assert info.spacing == pytest.approx(SPACING)


def test_good_case_info_with_permuted_orientation(tmp_path):
    case = new_case(tmp_path, orientation="PSR")
    info = check_case(case, BRATS)
    assert info.shape == SHAPE
    assert info.spacing == pytest.approx(SPACING)


def test_four_dimensional_images_add_their_channels(tmp_path):
    case = new_case(tmp_path)
    for index, path in enumerate(case.images):
        two = np.random.default_rng(index).random((*SHAPE, 2)).astype(np.float32)
        save(path, two, affine_of(case.label))
    info = check_case(case, BRATS)
    assert info.n_channels == 8
    assert info.shape == SHAPE


@pytest.mark.parametrize("index", [0, 1])
def test_a_four_dimensional_image_beside_three_dimensional_ones_is_refused(tmp_path, index):
    # MONAI stacks a case's images as they are: (X, Y, Z, 2) beside (X, Y, Z) fails while loading, mid-fold
    case = new_case(tmp_path)
    two = np.random.default_rng(1).random((*SHAPE, 2)).astype(np.float32)
    save(case.images[index], two, affine_of(case.label))
    with pytest.raises(DataError, match=r"has (4|3) axes, .* has (3|4); the images of a case are stacked"):
        check_case(case, BRATS)


@pytest.mark.parametrize("index", [0, 2, "label"])
def test_missing_file_is_named(tmp_path, index):
    case = new_case(tmp_path)
    path = case.label if index == "label" else case.images[index]
    path.unlink()
    message = data_error(case)
    assert str(path) in message
    assert "does not exist" in message


@pytest.mark.parametrize("index", [0, 3, "label"])
def test_corrupt_file_is_named(tmp_path, index):
    case = new_case(tmp_path)
    path = case.label if index == "label" else case.images[index]
    path.write_bytes(b"this is not a NIfTI file \x00\x01\x02\xff" * 20)
    message = data_error(case)
    assert str(path) in message
    assert "cannot read" in message


def test_shape_mismatch_names_file_and_both_shapes(tmp_path):
    case = new_case(tmp_path)
    bad = case.images[2]
    save(bad, np.zeros((16, 17, 19), np.float32), affine_of(case.images[0]))
    message = data_error(case)
    assert str(bad) in message
    assert "(16, 17, 19)" in message
    assert str(SHAPE) in message


def test_label_shape_mismatch(tmp_path):
    case = new_case(tmp_path)
    save(case.label, np.zeros((15, 17, 18), np.uint8), affine_of(case.images[0]))
    message = data_error(case)
    assert str(case.label) in message
    assert "(15, 17, 18)" in message and str(SHAPE) in message


@pytest.mark.parametrize("which", ["image", "label"])
def test_affine_beyond_tolerance_names_the_file(tmp_path, which):
    case = new_case(tmp_path)
    path = case.images[1] if which == "image" else case.label
    image = nib.load(str(path))
    affine = image.affine.copy()
    affine[0, 3] += 1.0  # origin shifted by 1 mm
    save(path, np.asanyarray(image.dataobj), affine)
    message = data_error(case)
    assert str(path) in message
    assert "affine" in message


def test_affine_within_tolerance_passes(tmp_path):
    case = new_case(tmp_path)
    image = nib.load(str(case.images[3]))
    affine = image.affine.copy()
    affine[:3, 3] += 1e-5
    affine[0, 0] += 1e-5
    assert 1e-5 < AFFINE_TOLERANCE
    save(case.images[3], np.asanyarray(image.dataobj), affine)
    assert not np.array_equal(affine_of(case.images[3]), affine_of(case.images[0]))
    info = check_case(case, BRATS)
    assert info.n_channels == 4


def test_undeclared_label_values_are_listed(tmp_path):
    case = new_case(tmp_path)  # synthetic labels are 0, 1, 2, 4
    message = data_error(case, labels={0, 1})
    assert str(case.label) in message
    assert "[2, 4]" in message
    assert "[0, 1]" in message


@pytest.mark.parametrize(
    "declared, unknown",
    [({0, 1, 2, 3, 4}, None), ({0, 1, 2, 4, 7}, None), ({0, 1, 2, 3}, [4]), ({1, 2, 3, 4}, [0]), ({0, 1, 3, 4}, [2])],
)
def test_label_values_within_and_beyond_the_declared_range(tmp_path, declared, unknown):
    # every value between the smallest and the largest is declared: passes without listing the values; else listed
    case = new_case(tmp_path)  # synthetic labels are 0, 1, 2, 4
    if unknown is None:
        assert check_case(case, declared).n_channels == 4
    else:
        assert f"label values {unknown} are not among the declared labels {sorted(declared)}" in data_error(
            case, declared
        )


@pytest.mark.parametrize("index", [0, 3, "label"])
def test_data_truncated_behind_a_readable_header_is_named(tmp_path, index):
    case = new_case(tmp_path)
    path = case.label if index == "label" else case.images[index]
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) * 2 // 3])
    message = data_error(case)
    assert message.startswith(f"{path}: cannot read the image data")


def test_label_values_not_checked_without_declared_labels(tmp_path):
    case = new_case(tmp_path)
    assert check_case(case, None).n_channels == 4


def test_non_integer_label_values(tmp_path):
    case = new_case(tmp_path)
    data = np.zeros(SHAPE, np.float32)
    data[4:8, 4:8, 4:8] = 1.0
    data[9:11, 9:11, 9:11] = 0.5
    save(case.label, data, affine_of(case.images[0]))
    message = data_error(case)
    assert str(case.label) in message
    assert "non-integer" in message
    assert "0.5" in message


def test_integer_values_stored_as_float_are_fine(tmp_path):
    case = new_case(tmp_path)
    data = np.asanyarray(nib.load(str(case.label)).dataobj).astype(np.float32)
    save(case.label, data, affine_of(case.images[0]))
    assert check_case(case, BRATS).n_channels == 4


def test_missing_label_when_labels_are_required(tmp_path):
    case = new_case(tmp_path, with_label=False)
    assert case.label is None
    message = data_error(case)
    assert "'c0'" in message
    assert "label" in message
    assert check_case(case, BRATS, with_label=False).n_channels == 4


# --- check_cases: all groups at once -------------------------------------------------------------------------------


def test_check_cases_returns_infos_per_group(tmp_path):
    training = [new_case(tmp_path, f"t{i}", seed=i) for i in range(3)]
    test = [new_case(tmp_path, "p0", seed=9, with_label=False)]
    infos = check_cases({"training": training, "test": test}, BRATS, labelled_groups=("training",))
    assert [info.case_id for info in infos["training"]] == ["t0", "t1", "t2"]
    assert [info.case_id for info in infos["test"]] == ["p0"]
    assert all(info.n_channels == 4 and info.shape == SHAPE for group in infos.values() for info in group)


def test_case_without_label_in_training_group(tmp_path):
    good = new_case(tmp_path, "good", seed=1)
    unlabelled = new_case(tmp_path, "nolabel", seed=2, with_label=False)
    with pytest.raises(DataError) as info:
        check_cases({"training": [good, unlabelled]}, BRATS, labelled_groups=("training",))
    message = str(info.value)
    assert message.startswith("training_filenames: ")
    assert "'nolabel'" in message
    assert "label" in message
    assert "good" not in message
    assert len(message.splitlines()) == 1


def test_several_bad_cases_give_one_line_each(tmp_path):
    ok = new_case(tmp_path, "ok", seed=0)
    missing = new_case(tmp_path, "missing", seed=1)
    missing.images[1].unlink()
    corrupt = new_case(tmp_path, "corrupt", seed=2)
    corrupt.images[0].write_bytes(b"garbage" * 100)
    values = new_case(tmp_path, "values", seed=3)
    unlabelled = new_case(tmp_path, "unlabelled", seed=4, with_label=False)
    groups = {"training": [ok, missing, corrupt], "validation": [values, unlabelled]}
    with pytest.raises(DataError) as info:
        check_cases(groups, {0, 2}, labelled_groups=("training", "validation"))
    lines = str(info.value).splitlines()
    assert len(lines) == 5
    by_case = {
        "missing": (str(missing.images[1]), "training_filenames: ", "does not exist"),
        "corrupt": (str(corrupt.images[0]), "training_filenames: ", "cannot read"),
        "values": (str(values.label), "validation_filenames: ", "[1, 4]"),
        "unlabelled": ("'unlabelled'", "validation_filenames: ", "label"),
    }
    ok_line = [line for line in lines if "/ok/" in line]
    assert len(ok_line) == 1 and ok_line[0].startswith("training_filenames: ")  # ok has labels 1 and 4 too
    for needle, prefix, words in by_case.values():
        matching = [line for line in lines if needle in line]
        assert len(matching) == 1, (needle, lines)
        assert matching[0].startswith(prefix)
        assert words in matching[0]


def test_different_channel_counts_across_cases(tmp_path):
    four = new_case(tmp_path, "four", seed=0)
    three = new_case(tmp_path, "three", seed=1, n_modalities=3)
    with pytest.raises(DataError) as info:
        check_cases({"training": [four, three]}, BRATS, labelled_groups=("training",))
    assert "[3, 4]" in str(info.value)


def test_many_cases_are_checked_in_processes_with_the_same_results_and_lines(tmp_path, monkeypatch):
    from unet3d.data import checks

    monkeypatch.setenv("UNET3D_CACHE_DIR", "off")  # every call reads the files
    good = [new_case(tmp_path, f"good{i}", seed=i) for i in range(3)]
    values = new_case(tmp_path, "values", seed=5)
    groups = {"training": [*good, values]}
    by_threads = check_cases({"training": good}, BRATS, labelled_groups=("training",), n_threads=2)
    with pytest.raises(DataError) as threads_error:
        check_cases(groups, {0, 2}, labelled_groups=("training",), n_threads=2)
    started = []
    original = checks.ProcessPoolExecutor

    def spy(*args, **kwargs):
        started.append((kwargs["mp_context"].get_start_method(), kwargs["initializer"].__name__))
        return original(*args, **kwargs)

    monkeypatch.setattr(checks, "PROCESS_MINIMUM", 1)
    monkeypatch.setattr(checks, "ProcessPoolExecutor", spy)
    assert check_cases({"training": good}, BRATS, labelled_groups=("training",), n_threads=2) == by_threads
    with pytest.raises(DataError) as processes_error:
        check_cases(groups, {0, 2}, labelled_groups=("training",), n_threads=2)
    assert str(processes_error.value) == str(threads_error.value)
    assert started == [("forkserver", "keep_freed_memory")] * 2

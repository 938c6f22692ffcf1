"""Tests for cross-validation splits (unet3d/experiment/splits.py)."""

import json
from collections import Counter
from pathlib import Path

import pytest

from unet3d.config.cases import Case
from unet3d.errors import ConfigError
from unet3d.experiment.splits import load_or_make_splits, make_splits
from unet3d.workdir import SPLITS_FILENAME


def make_cases(n, subjects=None, sites=None):
    cases = []
    for i in range(n):
        extra = {} if sites is None else {"site": sites[i]}
        subject = None if subjects is None else subjects[i]
        image = Path(f"img{i}.nii.gz")
        cases.append(Case(images=[image], label=None, case_id=f"c{i:02d}", subject=subject, extra=extra))
    return cases


def flatten(folds):
    return [case_id for fold in folds for case_id in fold]


# --- make_splits ---------------------------------------------------------------------------------------------------


def test_same_seed_gives_same_split():
    cases = make_cases(11)
    assert make_splits(cases, 3, seed=7) == make_splits(cases, 3, seed=7)


def test_different_seeds_give_different_splits():
    cases = make_cases(20)
    first = make_splits(cases, 4, seed=1)
    second = make_splits(cases, 4, seed=2)
    assert sorted(map(sorted, first)) != sorted(map(sorted, second))


@pytest.mark.parametrize(("n_cases", "n_folds"), [(10, 3), (11, 5), (7, 7), (20, 2)])
def test_every_case_held_out_exactly_once_and_fold_sizes_balanced(n_cases, n_folds):
    cases = make_cases(n_cases)
    folds = make_splits(cases, n_folds, seed=25)
    assert len(folds) == n_folds
    held_out = flatten(folds)
    assert sorted(held_out) == sorted(case.case_id for case in cases)
    assert len(held_out) == len(set(held_out))
    sizes = [len(fold) for fold in folds]
    assert max(sizes) - min(sizes) <= 1
    assert all(size >= 1 for size in sizes)
    for fold in folds:
        assert fold == sorted(fold)  # ids listed in case order within a fold


def test_subjects_never_straddle_folds():
    # 6 subjects with 1-3 visits each.
    visits = [1, 3, 2, 2, 3, 1]
    subjects = [f"s{k}" for k, count in enumerate(visits) for _ in range(count)]
    cases = make_cases(len(subjects), subjects=subjects)
    subject_of = {case.case_id: case.subject for case in cases}
    for seed in range(5):
        folds = make_splits(cases, 3, seed=seed)
        assert sorted(flatten(folds)) == sorted(subject_of)
        fold_of_subject = {}
        for k, fold in enumerate(folds):
            for case_id in fold:
                subject = subject_of[case_id]
                assert fold_of_subject.setdefault(subject, k) == k, f"subject {subject} is in two folds"
        assert len(fold_of_subject) == 6


def test_stratified_folds_keep_site_proportions():
    sites = ["A" if i % 3 else "B" for i in range(24)]  # 16 A, 8 B: 2 to 1
    cases = make_cases(24, sites=sites)
    site_of = {case.case_id: case.extra["site"] for case in cases}
    for seed in (0, 1, 2):
        folds = make_splits(cases, 4, seed=seed, stratify="site")
        assert sorted(flatten(folds)) == sorted(site_of)
        for fold in folds:
            counts = Counter(site_of[i] for i in fold)
            assert counts == {"A": 4, "B": 2}


def test_stratified_and_grouped():
    subjects = [f"s{i // 2}" for i in range(16)]  # 8 subjects with 2 visits
    sites = ["A" if i // 2 % 2 else "B" for i in range(16)]  # 4 subjects per site
    cases = make_cases(16, subjects=subjects, sites=sites)
    folds = make_splits(cases, 2, seed=3, stratify="site")
    by_id = {case.case_id: case for case in cases}
    for fold in folds:
        assert {by_id[i].extra["site"] for i in fold} == {"A", "B"}
    assert {by_id[i].subject for i in folds[0]}.isdisjoint({by_id[i].subject for i in folds[1]})


def test_more_folds_than_cases_is_refused():
    with pytest.raises(ConfigError) as info:
        make_splits(make_cases(3), 5, seed=0)
    message = str(info.value)
    assert "cross_validation.n_folds" in message
    assert "5" in message and "got 3" in message
    assert "cases" in message


def test_more_folds_than_subjects_is_refused():
    cases = make_cases(6, subjects=["a", "a", "b", "b", "c", "c"])
    with pytest.raises(ConfigError) as info:
        make_splits(cases, 4, seed=0)
    message = str(info.value)
    assert "subjects" in message
    assert "4" in message and "got 3" in message


def test_missing_stratify_key_names_the_case():
    cases = make_cases(6, sites=["A", "B", "A", "B", "A", "B"])
    del cases[4].extra["site"]
    with pytest.raises(ConfigError) as info:
        make_splits(cases, 2, seed=0, stratify="site")
    message = str(info.value)
    assert "c04" in message
    assert "site" in message


# --- load_or_make_splits -------------------------------------------------------------------------------------------


def test_splits_json_written_with_structure(tmp_path):
    cases = make_cases(9)
    path = tmp_path / SPLITS_FILENAME
    folds = load_or_make_splits(path, cases, 3, seed=11)
    assert path.is_file()
    saved = json.loads(path.read_text())
    assert saved["n_folds"] == 3
    assert saved["random_seed"] == 11
    assert len(saved["folds"]) == 3
    all_ids = [case.case_id for case in cases]
    for k, fold in enumerate(saved["folds"]):
        assert fold["validation"] == folds[k]
        assert fold["training"] == [i for i in all_ids if i not in folds[k]]
        assert set(fold["training"]).isdisjoint(fold["validation"])
        assert sorted(fold["training"] + fold["validation"]) == sorted(all_ids)
    assert folds == make_splits(cases, 3, seed=11)


def test_splits_json_is_reused_even_with_another_seed(tmp_path):
    cases = make_cases(12)
    path = tmp_path / SPLITS_FILENAME
    first = load_or_make_splits(path, cases, 3, seed=1)
    text = path.read_text()
    assert make_splits(cases, 3, seed=2) != first  # a fresh split with seed 2 would differ
    again = load_or_make_splits(path, cases, 3, seed=2)
    assert again == first
    assert path.read_text() == text  # not rewritten


def test_splits_json_reused_when_cases_are_reordered(tmp_path):
    cases = make_cases(8)
    path = tmp_path / SPLITS_FILENAME
    first = load_or_make_splits(path, cases, 2, seed=1)
    assert load_or_make_splits(path, list(reversed(cases)), 2, seed=1) == first


def test_added_case_is_refused(tmp_path):
    cases = make_cases(8)
    path = tmp_path / SPLITS_FILENAME
    load_or_make_splits(path, cases, 2, seed=1)
    with pytest.raises(ConfigError) as info:
        load_or_make_splits(path, make_cases(9), 2, seed=1)
    message = str(info.value)
    assert str(path) in message
    assert "delete" in message
    assert "c08" in message  # the new case


def test_removed_case_is_refused(tmp_path):
    cases = make_cases(8)
    path = tmp_path / SPLITS_FILENAME
    load_or_make_splits(path, cases, 2, seed=1)
    with pytest.raises(ConfigError) as info:
        load_or_make_splits(path, cases[1:], 2, seed=1)
    assert "c00" in str(info.value)
    assert "delete" in str(info.value)


def test_different_fold_count_is_refused(tmp_path):
    cases = make_cases(8)
    path = tmp_path / SPLITS_FILENAME
    load_or_make_splits(path, cases, 2, seed=1)
    with pytest.raises(ConfigError) as info:
        load_or_make_splits(path, cases, 4, seed=1)
    message = str(info.value)
    assert "n_folds" in message
    assert "2" in message and "4" in message
    assert "delete" in message

"""Overlay pictures (unet3d/evaluation/overlays.py): where the slices go and what is drawn."""

import numpy as np
import pytest

from unet3d.evaluation.overlays import PALETTE, disagreement_point, overlay_figure, value_colours

matplotlib = pytest.importorskip("matplotlib")


def test_slices_go_through_the_largest_disagreement():
    truth = np.zeros((10, 12, 8), np.uint8)
    prediction = truth.copy()
    truth[2:5, 3:6, 1:3] = 1
    prediction[2:5, 3:6, 1:3] = 1
    prediction[7, 9, 6] = 2  # one stray voxel
    prediction[7, 2:5, 6] = 1  # and a row of false positives on the same x and z slices
    assert disagreement_point(truth, prediction) == (7, 2, 6)


def test_where_they_agree_the_slices_go_through_the_truth():
    truth = np.zeros((10, 10, 10), np.uint8)
    truth[6:9, 1:4, 4:7] = 1
    assert disagreement_point(truth, truth.copy()) == (7, 2, 5)
    assert disagreement_point(np.zeros((5, 5, 5)), np.zeros((5, 5, 5))) == (2, 2, 2)


def test_a_volume_gets_three_slices_with_both_outlines_and_a_picture_one():
    matplotlib.use("Agg")
    truth = np.zeros((12, 12, 6), np.uint8)
    truth[3:8, 3:8, 1:5] = 1
    prediction = np.roll(truth, 2, axis=0)
    figure = overlay_figure(np.random.default_rng(0).random((12, 12, 6)), truth, prediction, (1.0, 1.0, 3.0), "c")
    axes = [a for a in figure.axes if a.get_title()]
    assert [a.get_title() for a in axes] == ["x = 3", "y = 3", "z = 1"]
    colours = {matplotlib.colors.to_hex(c.get_edgecolor()[0]) for a in axes for c in a.collections}
    assert colours == {PALETTE[0]}  # one label value: one colour, truth solid and prediction dashed
    assert axes[0].get_images()[0].get_array().shape == (6, 12)  # the y-z plane, z up
    picture = overlay_figure(np.ones((20, 30)), truth[:, :, 2], prediction[:, :, 2], (1.0, 1.0), "p")
    assert [a.get_title() for a in picture.axes if a.get_title()] == ["picture"]


def test_a_case_id_with_dollar_signs_is_drawn_as_text(tmp_path):
    # Issue 22, item 6: `x$\undefinedmacro$y` went into matplotlib as math text and no report was ever written.
    matplotlib.use("Agg")
    truth = np.zeros((8, 8, 4), np.uint8)
    truth[2:5, 2:5, 1:3] = 1
    figure = overlay_figure(np.ones((8, 8, 4)), truth, truth, (1.0, 1.0, 1.0), r"x$\undefinedmacro$y")
    figure.savefig(tmp_path / "case.png")
    assert figure._suptitle.get_text() == r"x$\undefinedmacro$y"


def test_each_label_value_has_its_own_colour_and_a_legend_names_it():
    # Issue 25: every region was outlined in the same two colours; whole tumour, core and enhancing looked alike.
    matplotlib.use("Agg")
    truth = np.zeros((12, 12, 6), np.uint8)
    truth[2:10, 2:10, 1:5] = 2
    truth[4:8, 4:8, 2:4] = 1
    truth[5:7, 5:7, 2:4] = 4
    assert value_colours(truth) == {1: PALETTE[0], 2: PALETTE[1], 4: PALETTE[2]}
    figure = overlay_figure(np.ones((12, 12, 6)), truth, truth, (1.0, 1.0, 1.0), "c")
    drawn = {matplotlib.colors.to_hex(c.get_edgecolor()[0]) for a in figure.axes for c in a.collections}
    assert drawn == {PALETTE[0], PALETTE[1], PALETTE[2]}
    (legend,) = figure.legends
    assert [t.get_text() for t in legend.get_texts()] == ["label 1", "label 2", "label 4", "truth", "prediction"]

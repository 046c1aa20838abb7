"""The training benchmark's figures: labelled, legended, zoomed where the surrogates differ."""
from __future__ import annotations

import importlib

import pytest

from softfloor.benchmarks import training_plots
from tests.conftest import require_extra

CONFIGS = ["w8a8", "w2a2"]
ROWS = [{"surrogate": "float", "config": "float", "acc_mean": 96.7, "acc_std": 0.2},
        {"surrogate": "ste", "config": "w8a8", "acc_mean": 97.6, "acc_std": 0.5},
        {"surrogate": "ste", "config": "w2a2", "acc_mean": 96.4, "acc_std": 0.4},
        {"surrogate": "sigmoid", "config": "w8a8", "acc_mean": 97.3, "acc_std": 0.3},
        {"surrogate": "sigmoid", "config": "w2a2", "acc_mean": 91.5, "acc_std": 0.8},
        {"surrogate": "ste_plain", "config": "w8a8", "acc_mean": 57.3, "acc_std": 7.8},
        {"surrogate": "ste_plain", "config": "w2a2", "acc_mean": 13.1, "acc_std": 4.1}]


def test_zoom_leaves_out_a_surrogate_that_does_not_train():
    assert training_plots.zoom_band(ROWS, CONFIGS) == (90.0, 99.0)
    without = [r for r in ROWS if r["surrogate"] != "ste_plain"]
    assert training_plots.zoom_band(without, CONFIGS) == (90.0, 99.0)


def test_a_figure_without_labels_or_legend_is_refused(tmp_path):
    plt = require_extra("sweep", lambda: importlib.import_module("matplotlib.pyplot"))
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1], label="a")
    with pytest.raises(ValueError, match="no x label"):
        training_plots.check_labelled(fig)
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    with pytest.raises(ValueError, match="legend"):
        training_plots.check_labelled(fig)
    ax.legend()
    training_plots.check_labelled(fig)
    plt.close(fig)


def test_accuracy_figure_is_1000_px_wide(tmp_path):
    require_extra("sweep", lambda: importlib.import_module("matplotlib"))
    path = training_plots.accuracy_figure(tmp_path / "a.png", ROWS, CONFIGS, "test data")
    assert int.from_bytes(path.read_bytes()[16:20], "big") == 1000

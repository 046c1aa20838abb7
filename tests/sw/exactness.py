"""Shared checks of the export tests: a trained model, its exported integer model and the golden
model agree bit for bit (``tests/sw/test_train_export.py`` for the MLP, ``test_cnn.py``)."""
from __future__ import annotations

import numpy as np
import pytest

from softfloor import golden, intmodel
from softfloor.data import load_digits_split
from softfloor.nn.exporter import export_result
from softfloor.train import float_hard_codes, hard_codes, result_split, train_qat


@pytest.fixture(scope="module")
def splits():
    """``splits(bits)``: the digits split with ``bits``-bit input codes (the global quantizer);
    ``splits(cfg)``: the split a :class:`~softfloor.train.TrainConfig` trains on
    (:func:`softfloor.train.digits_split`); each loaded once."""
    cache = {}

    def get(what):
        key = (what, "global") if isinstance(what, int) else (what.in_bits, what.input_quantizer)
        if key not in cache:
            cache[key] = load_digits_split(*key)
        return cache[key]
    return get


def assert_bit_exact(model_t, split, model_i):
    """golden(exported) == hard_codes(torch, int64) == float hard forward, every layer, every
    sample of both splits."""
    for codes in (split.c_test, split.c_train):
        want, want_layers = hard_codes(model_t, codes, intermediates=True)
        got, got_layers = golden.run(model_i, codes, intermediates=True)
        assert got.dtype == np.int64 and want.dtype == np.int64
        assert np.array_equal(got, want)
        assert len(got_layers) == len(want_layers) == len(model_i.layers)
        for g, w in zip(got_layers, want_layers):
            assert g.shape == w.shape and np.array_equal(g, w)
        assert np.array_equal(float_hard_codes(model_t, codes), want)


def trained_and_exported(cfg, splits, tmp_path):
    """Train ``cfg``, export, save and load the model file; check it bit-exact
    (:func:`assert_bit_exact`). Returns ``(result, split, model)``, the split with the codes of
    the input quantizer the model was trained with (learned thresholds at w1a1)."""
    res = train_qat(cfg, splits(cfg))
    split = result_split(res, splits(cfg))
    assert res.accuracy["bit_exact"] is True
    model = intmodel.load(intmodel.save(export_result(res),
                                        tmp_path / "m.intmodel.json"))
    assert_bit_exact(res.model, split, model)
    return res, split, model

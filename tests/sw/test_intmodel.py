"""The integer model file: round trip, validation that names the field, atomic writes."""
import copy
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from softfloor import intmodel as im
from tests.randmodel import random_model


@pytest.fixture
def model():
    return random_model(np.random.default_rng(0), (16, 8, 4), in_bits=4, final_requant=False, multipliers=False)


def test_round_trip(model, tmp_path):
    p = im.save(model, tmp_path / "m.intmodel.json")
    m2 = im.load(p)
    assert m2.to_dict() == model.to_dict()
    assert "dense" in m2.summary() and "requant" in m2.summary()


def test_accumulator_overflow_is_rejected(model):
    d = model.to_dict()
    d["layers"][0]["acc_bits"] = 6
    with pytest.raises(im.ModelFormatError, match=r"layers\[0\].acc_bits \(fc0\).*can overflow"):
        im.IntModel.from_dict(d)


@pytest.mark.parametrize("mutate, match", [
    (lambda d: d.update(version=99), "version"),
    (lambda d: d.update(format="onnx"), "format"),
    (lambda d: d["layers"][0].update(weight_bits=9), "weight_bits"),
    (lambda d: d["layers"][0]["weight"][0].__setitem__(0, 100), r"weight\[0\]\[0\]"),
    (lambda d: d["layers"][0]["weight"].pop(), "weight"),
    (lambda d: d["layers"][0].update(op="conv9d"), "op"),
    (lambda d: d["layers"][1].update(rounding="nearest"), "rounding"),
    (lambda d: d["layers"][1].update(shift=-1), "shift"),
    (lambda d: d["layers"][1].update(hi=99), "hi"),
    (lambda d: d["layers"][0].update(extra=1), "unknown field"),
    (lambda d: d["input"].update(scale=0), "scale"),
    (lambda d: d["input"].update(bits="4"), "bits"),
    (lambda d: d["layers"][2].update(in_features=5), r"layers\[2\]"),
    (lambda d: d.__delitem__("output"), "output"),
    (lambda d: d.update(layers=[]), "no layers"),
])
def test_corruptions_name_the_field(model, mutate, match):
    d = copy.deepcopy(model.to_dict())
    mutate(d)
    with pytest.raises(im.ModelFormatError, match=match):
        im.IntModel.from_dict(d)


def test_load_errors(tmp_path):
    with pytest.raises(im.ModelFormatError, match="no such model file"):
        im.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(im.ModelFormatError, match="not valid JSON"):
        im.load(tmp_path / "bad.json")


def _paths(d, prefix=()):
    if isinstance(d, dict):
        for k, v in d.items():
            yield prefix + (k,)
            yield from _paths(v, prefix + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d[:3]):
            yield prefix + (i,)
            yield from _paths(v, prefix + (i,))


JUNK = [None, -1, 0, 10**30, 1.5, "x", [], {}, True, float("nan")]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_corruption_gives_a_model_format_error(model, data):
    """Replace any field with junk: either still valid, or a ModelFormatError -- never a crash."""
    d = copy.deepcopy(model.to_dict())
    paths = [p for p in _paths(d) if p and p[0] != "meta"]
    path = data.draw(st.sampled_from(paths))
    junk = data.draw(st.sampled_from(JUNK))
    node = d
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = junk
    try:
        im.IntModel.from_dict(json.loads(json.dumps(d)))
    except im.ModelFormatError:
        pass


def test_atomic_save_keeps_the_old_file_on_failure(model, tmp_path, monkeypatch):
    p = im.save(model, tmp_path / "m.json")
    before = p.read_text()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(im.os, "replace", boom)
    with pytest.raises(OSError):
        im.save(model, p)
    assert p.read_text() == before
    assert [f.name for f in tmp_path.iterdir()] == ["m.json"]

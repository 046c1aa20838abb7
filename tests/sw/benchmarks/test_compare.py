"""The ``compare`` benchmark section (Brevitas side by side with softfloor) at a tiny size.

Needs the [compare] extra (Brevitas): under CI a missing extra FAILS, elsewhere it skips.
"""
from __future__ import annotations

import json

import pytest

from tests.conftest import require_extra


def _import_compare():
    from softfloor.benchmarks import compare
    return compare


@pytest.fixture(scope="module")
def compare():
    return require_extra("[compare]", _import_compare)


def test_section_tiny_run(compare, tmp_path, monkeypatch):
    """The runner's code path (``python -m softfloor.benchmarks compare --quick``) at 2
    configurations, 1 seed, 2 epochs: JSON and markdown side by side, sane numbers."""
    from softfloor.benchmarks import SECTIONS
    from softfloor.benchmarks.__main__ import main
    assert "compare" in SECTIONS
    configs = [c for c in compare.CONFIGS if c[0] in ("float", "w1a1+BN")]
    monkeypatch.setattr(compare, "CONFIGS", tuple(configs))
    monkeypatch.setattr(compare, "QUICK_EPOCHS", 2)
    monkeypatch.setattr(compare, "QUICK_TIME_EPOCHS", 2)
    monkeypatch.setattr(compare, "WORKERS", 1)
    assert main(["compare", "--quick", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "compare.json").read_text())
    assert res["seeds"] == [0] and res["epochs"] == 2 and res["configs"] == ["float", "w1a1+BN"]
    rows = res["rows"]
    got = {(r["config"], r["trainer"]) for r in rows}
    assert got == {("float", "brevitas lr 1e-3"), ("float", "brevitas softfloor lr"),
                   ("float", "softfloor float"), ("w1a1+BN", "brevitas lr 1e-3"),
                   ("w1a1+BN", "brevitas softfloor lr"), ("w1a1+BN", "softfloor sigmoid"),
                   ("w1a1+BN", "softfloor ste")}
    for r in rows:
        assert 0 <= r["acc_mean"] <= 100 and r["acc_std"] == 0, r
        assert r["epoch_time_vs_float"] > 0, r
        assert r["bit_exact"] is (None if r["trainer"].startswith("brevitas") else True), r
    by = {(r["config"], r["trainer"]): r for r in rows}
    assert by[("float", "softfloor float")]["epoch_time_vs_float"] == 1.0
    # The learning rates and BatchNorm each row trained with.
    assert by[("w1a1+BN", "brevitas lr 1e-3")]["lr"] == "0.001"
    assert by[("w1a1+BN", "brevitas softfloor lr")]["lr"] == "0.01 flat_cosine beta1 0.7"
    assert by[("w1a1+BN", "softfloor ste")]["lr"] == "0.01 flat_cosine beta1 0.7"
    assert by[("float", "brevitas softfloor lr")]["lr"] == "0.005 cosine"
    assert by[("w1a1+BN", "brevitas lr 1e-3")]["batchnorm"] is True
    assert by[("w1a1+BN", "softfloor ste")]["batchnorm"] is False   # TrainConfig default
    assert by[("w1a1+BN", "softfloor ste")]["input_bits"] == 1
    # The side-by-side tables: one row per configuration, one column per trainer.
    acc = res["tables"]["accuracy (%, mean ± std over seeds)"]
    assert [r["config"] for r in acc] == ["float", "w1a1+BN"]
    for table in (acc, res["tables"]["epoch time vs float MLP"]):
        for r in table:
            assert list(r) == ["config", *compare.TRAINERS]
    md = (tmp_path / "compare.md").read_text()
    header = "| config | " + " | ".join(compare.TRAINERS) + " |"
    assert md.count(header) == 2 and "| w1a1+BN | " in md


def test_brevitas_sees_softfloor_input_codes(compare):
    """The constant-scale input quantizer passes softfloor's input codes through unchanged
    (also the 1-bit scale 3/4 and the 2-bit codes whose pixel / 4 would tie)."""
    import numpy as np
    import torch

    from softfloor.benchmarks.qonnx import build
    from softfloor.data import load_digits_split
    for bits in (1, 2, 4, 8):
        split = load_digits_split(bits)
        scale = split.input_spec.scale
        model = build("mlp", 4, bits, sizes=(64, 8, 10), input_quant=(bits, scale)).eval()
        x = torch.as_tensor((split.c_test * scale).astype(np.float32))
        q = model[0](x)
        assert float(q.scale) == scale
        assert np.array_equal(q.int().numpy().astype(np.int64), split.c_test), bits


def test_brevitas_weight_codes(compare):
    """1-bit weights are binary (+-1 codes), 2-bit weights ternary (narrow range)."""
    from softfloor.benchmarks.qonnx import build
    for bits, codes in ((1, {-1, 1}), (2, {-1, 0, 1})):
        model = build("mlp", bits, 2, sizes=(64, 32, 10), batchnorm=True, input_quant=(2, 0.25))
        got = set(model[1].quant_weight().int().unique().tolist())
        assert got == codes, (bits, got)


def test_validation_table_trains_on_the_folds(compare, tmp_path, monkeypatch):
    """The validation table: Brevitas (softfloor lr) and the softfloor STE on every fold x
    seed, measured on the fold's validation part (tiny: 1 configuration, 1 seed, 1 epoch)."""
    configs = [c for c in compare.CONFIGS if c[0] == "w1a1+BN"]
    seen = []
    real_job = compare._job

    def spy(args):
        seen.append(args)
        return real_job(args)
    monkeypatch.setattr(compare, "_job", spy)
    res = compare.run(tmp_path, True, configs=configs, seeds=(0,), epochs=1, time_epochs=2,
                      workers=1, validation=True)
    val = [r for r in res["rows"] if r.get("split") == "validation"]
    assert {r["trainer"] for r in val} == set(compare.VALIDATION_TRAINERS)
    assert all(r["runs"] == len(compare.VALIDATION_FOLDS) and 0 <= r["acc_mean"] <= 100
               for r in val)
    folds = sorted(kw["fold"] for _, kw in seen if "fold" in kw)
    assert folds == sorted(list(compare.VALIDATION_FOLDS) * 2)
    (table,) = [t for k, t in res["tables"].items() if k.startswith("validation accuracy")]
    assert [r["config"] for r in table] == ["w1a1+BN"]
    assert all(r["split"] == "test" for r in res["rows"] if r not in val)

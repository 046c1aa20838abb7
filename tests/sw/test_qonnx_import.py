"""QONNX import: Brevitas-trained models, exported with export_qonnx, imported and run through the
golden model (and the MLP through the RTL flow), compared with QONNX's own execute_onnx.

Needs the [qonnx] extra (brevitas, qonnx, onnx): under CI a missing extra FAILS, elsewhere it skips.
"""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest

from softfloor import cli, golden, intmodel as im
from softfloor.sim import tools
from tests.conftest import require_extra


def _imports():
    import brevitas  # noqa: F401
    import onnx  # noqa: F401
    import qonnx  # noqa: F401


def _require_extra():
    require_extra("[qonnx]", _imports)


@pytest.fixture(scope="module")
def digits():
    _require_extra()
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, stratify=y, random_state=0)
    return xtr, ytr, xte, yte


def _mlp(free: bool):
    """A w4a4 MLP 64-24-10: power-of-two per-tensor scales, or (free) float per-channel weight
    scales with a float last bias (rounded to the grid on import)."""
    from softfloor.benchmarks.qonnx import build
    return build("mlp", 4, 4, "float" if free else "po2", "channel" if free else "tensor",
                 last_bias=not free, sizes=(64, 24, 10))


def _cnn():
    """A w4a4 CNN conv3x3x4-pool-conv3x3x8-pool-dense, power-of-two per-channel scales."""
    from softfloor.benchmarks.qonnx import build
    return build("cnn", 4, 4, "po2", "channel", channels=(4, 8))


def _train_export(model, digits, shape, epochs, path, batch=64) -> float:
    """A few epochs of Adam, then export_qonnx; returns the Brevitas test accuracy."""
    import torch
    from brevitas.export import export_qonnx

    from softfloor.benchmarks.qonnx import train
    xtr, ytr, xte, yte = digits
    train(model, xtr, ytr, shape, epochs, seed=0, lr=0.02, batch=batch)
    with torch.no_grad():
        acc = float((model(torch.tensor(xte).reshape((-1,) + shape)).argmax(1).numpy()
                     == yte).mean())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_qonnx(model, torch.rand((1,) + shape), export_path=str(path))
    return acc


def _import_and_compare(path, digits):
    from softfloor import qonnx_import as qi
    res = qi.import_qonnx(path)
    _, _, xte, yte = digits
    agree = qi.agreement(path, res.model, xte, yte, batch=len(xte))
    print(f"\n{path.name}: exact={res.exact} agreement={json.dumps(agree)}")
    return res, agree


def _flow_rtl_equals_onnx(onnx_path, model, digits, n, tmp_path):
    """``flow --model`` (float inputs) on both simulators: RTL == golden == ``execute_onnx``
    on ``n`` test samples, integer codes."""
    from softfloor import qonnx_import as qi
    tools.ensure("verilator")
    tools.ensure("icarus")
    im.save(model, tmp_path / "model.intmodel.json")
    x, y = digits[2][:n], digits[3][:n]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    rc = cli.main(["flow", "--model", str(tmp_path / "model.intmodel.json"), "--inputs",
                   str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
                   "--simulator", "both", "--no-synth", "--out", str(tmp_path / "flow"),
                   "--quiet"])
    assert rc == 0
    rep = json.loads((tmp_path / "flow" / "report.json").read_text())
    vec = np.load(tmp_path / "flow" / "vectors.npz")
    ref = qi.execute_qonnx(onnx_path, x, batch=n)
    for sim in ("verilator", "icarus"):
        assert rep["bit_exact"][sim]["samples"] == n
        assert rep["bit_exact"][sim]["mismatches"] == 0
        np.testing.assert_array_equal(vec[f"rtl_{sim}"], np.rint(ref / model.output.scale))
    assert rep["accuracy"]["rtl"] == rep["accuracy"]["golden"]


@pytest.mark.slow
def test_power_of_two_mlp_is_bit_exact_through_golden_and_cli(digits, tmp_path, capsys):
    torch_acc = _train_export(_mlp(free=False), digits, (64,), 4, tmp_path / "mlp.onnx")
    res, agree = _import_and_compare(tmp_path / "mlp.onnx", digits)
    assert res.exact and res.approximations == []
    n = agree["samples"]
    assert n == 360
    assert agree["codes_equal"] == n and agree["argmax_equal"] == n and agree["codes_on_grid"]
    assert agree["accuracy_golden"] == agree["accuracy_qonnx"] == pytest.approx(torch_acc)
    assert agree["accuracy_golden"] > 0.5          # it did learn
    assert agree["layers"] == {"input": n, "rq1": n} and agree["first_differing_layer"] is None
    # The per-layer comparison finds the first layer that differs (here: a wrong shift).
    from softfloor import qonnx_import as qi
    bad = im.IntModel.from_dict(res.model.to_dict())
    bad.layers[1].shift += 1
    worse = qi.agreement(tmp_path / "mlp.onnx", bad, digits[2][:50], batch=50)
    assert worse["first_differing_layer"] == "rq1" and worse["layers"]["input"] == 50
    # Int32 biases at input x weight scale, requant by pure shifts, a version 1 file.
    kinds = [type(layer).__name__ for layer in res.model.layers]
    assert kinds == ["Dense", "Requant", "Dense"]
    assert res.model.layers[1].multiplier == 1 and res.model.to_dict()["version"] == 1
    # The CLI writes the same model, with the measured agreement in meta.
    np.save(tmp_path / "x.npy", digits[2])
    np.save(tmp_path / "y.npy", digits[3])
    out = tmp_path / "mlp.intmodel.json"
    assert cli.main(["import-qonnx", str(tmp_path / "mlp.onnx"), "-o", str(out),
                     "--check", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy")]) == 0
    assert "exact (power-of-two scales)" in capsys.readouterr().out
    m = im.load(out)
    assert m.meta["agreement"]["codes_equal"] == n
    np.testing.assert_array_equal(golden.run_real(m, digits[2]), golden.run_real(res.model,
                                                                                 digits[2]))


@pytest.mark.sim
@pytest.mark.slow
def test_power_of_two_cnn_is_bit_exact_through_golden_and_rtl(digits, tmp_path):
    """Conv (per-channel power-of-two weight scales), MaxPool, Flatten: golden == execute_onnx
    on every sample, then import -> flow --model through the RTL on both simulators."""
    torch_acc = _train_export(_cnn(), digits, (1, 8, 8), 2, tmp_path / "cnn.onnx", batch=128)
    res, agree = _import_and_compare(tmp_path / "cnn.onnx", digits)
    assert res.exact
    n = agree["samples"]
    assert agree["codes_equal"] == n and agree["argmax_equal"] == n
    assert agree["accuracy_golden"] == pytest.approx(torch_acc)
    assert set(agree["layers"].values()) == {n} and len(agree["layers"]) == 3
    ops = [layer.op for layer in res.model.layers]
    assert ops == ["conv2d", "requant", "maxpool2d", "conv2d", "requant", "maxpool2d",
                   "flatten", "dense"]
    assert res.model.input.shape == (1, 8, 8) and res.model.to_dict()["version"] == 2
    _flow_rtl_equals_onnx(tmp_path / "cnn.onnx", res.model, digits, 40, tmp_path)


@pytest.mark.slow
def test_free_scale_mlp_reports_its_agreement(digits, tmp_path):
    """Float scales (per-channel weights, float last bias): integer multiplier + shift; the
    measured agreement with execute_onnx is reported (printed with -s) and must stay high."""
    _train_export(_mlp(free=True), digits, (64,), 4, tmp_path / "free.onnx")
    res, agree = _import_and_compare(tmp_path / "free.onnx", digits)
    assert not res.exact
    text = " ".join(res.approximations)
    assert "requant ratio" in text and "bias not on the accumulator grid" in text
    assert any(isinstance(layer, im.ChannelRequant) for layer in res.model.layers)
    n = agree["samples"]
    assert agree["argmax_equal"] >= 0.97 * n
    assert agree["codes_equal"] >= 0.9 * n


@pytest.mark.sim
@pytest.mark.slow
def test_imported_mlp_runs_bit_exact_through_the_rtl_flow(digits, tmp_path):
    """import-qonnx -> flow --model on both simulators: RTL == golden == execute_onnx."""
    from softfloor import qonnx_import as qi
    _train_export(_mlp(free=False), digits, (64,), 2, tmp_path / "mlp.onnx")
    res = qi.import_qonnx(tmp_path / "mlp.onnx")
    assert res.exact
    _flow_rtl_equals_onnx(tmp_path / "mlp.onnx", res.model, digits, 120, tmp_path)

# ----------------------------------------------------------------------------------------------
# Unsupported graphs: an error naming the node and the reason (hand-built QONNX graphs).

def _graph(tmp_path, body, shape=(1, 4), name="g"):
    """x -> Quant(u4, 2^-4) -> MatMul(Quant(W s4, 2^-3)) -> body(...) -> y."""
    _require_extra()
    import onnx
    from onnx import TensorProto, helper, numpy_helper as nh
    inits, nodes = [], []

    def const(nm, v):
        inits.append(nh.from_array(np.asarray(v, dtype=np.float32 if np.asarray(v).dtype.kind
                                              == "f" else np.int64), nm))
        return nm

    def quant(inp, out, scale, bits, signed, rounding="ROUND", zp=0.0, narrow=0):
        nodes.append(helper.make_node(
            "Quant", [inp, const(out + "_s", np.float32(scale)), const(out + "_z", np.float32(zp)),
                      const(out + "_b", np.float32(bits))], [out], name=f"q_{out}",
            domain="qonnx.custom_op.general", signed=signed, narrow=narrow,
            rounding_mode=rounding))
        return out
    quant("x", "xq", 1 / 16, 4, 0)
    const("w", np.linspace(-1, 1, 4 * shape[1]).reshape(shape[1], 4).astype(np.float32))
    quant("w", "wq", 1 / 8, 4, 1)
    nodes.append(helper.make_node("MatMul", ["xq", "wq"], ["acc"], name="mm"))
    out = body(nodes, const, quant, helper)
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                      list(shape))],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT,
                                                         [shape[0], 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13),
                                            helper.make_opsetid("qonnx.custom_op.general", 1)])
    p = tmp_path / f"{name}.onnx"
    onnx.save(m, p)
    return p


def _sigmoid(nodes, const, quant, helper):
    nodes.append(helper.make_node("Sigmoid", ["acc"], ["y"], name="sig"))
    return "y"


def _ceil(nodes, const, quant, helper):
    return quant("acc", "y", 1 / 4, 4, 1, rounding="CEIL")


def _zero_point(nodes, const, quant, helper):
    return quant("acc", "y", 1 / 4, 4, 0, zp=3.0)


def _residual(nodes, const, quant, helper):
    nodes.append(helper.make_node("Add", ["acc", "acc"], ["y"], name="res"))
    return "y"


def _wide_weights(nodes, const, quant, helper):
    const("w2", np.ones((4, 2), dtype=np.float32))
    quant("w2", "w2q", 1 / 512, 12, 1)
    nodes.append(helper.make_node("MatMul", ["acc", "w2q"], ["y"], name="mm2"))
    return "y"


def _bipolar_act(nodes, const, quant, helper):
    return quant("acc", "y", 1.0, 1, 1)


@pytest.mark.parametrize("body, match", [
    (_sigmoid, r"node sig \(Sigmoid\): not supported"),
    (_ceil, r"node q_y \(Quant\): rounding_mode CEIL"),
    (_zero_point, r"node q_y \(Quant\): zero point"),
    (_residual, r"node res \(Add\): only adding a constant bias"),
    (_wide_weights, r"node mm2 \(MatMul\): 12-bit weights"),
    (_bipolar_act, r"node q_y \(Quant\): 1-bit signed \(bipolar\)"),
])
def test_unsupported_nodes_are_named_with_the_reason(tmp_path, body, match):
    from softfloor import qonnx_import as qi
    p = _graph(tmp_path, body)
    with pytest.raises(qi.QonnxImportError, match=match):
        qi.import_qonnx(p)
    assert cli.main(["import-qonnx", str(p), "-o", str(tmp_path / "m.json")]) == 2
    assert not (tmp_path / "m.json").exists()


def test_hand_built_graph_imports_exactly(tmp_path):
    """The supported path of the hand-built graph: a requant by shifts, exact vs execute_onnx."""
    from softfloor import qonnx_import as qi

    def body(nodes, const, quant, helper):
        nodes.append(helper.make_node("Relu", ["acc"], ["r"], name="relu"))
        return quant("r", "y", 1 / 4, 3, 0, rounding="FLOOR")
    p = _graph(tmp_path, body)
    res = qi.import_qonnx(p)
    assert res.exact
    rq = res.model.layers[-1]
    assert (rq.shift, rq.rounding, rq.lo, rq.hi) == (5, "floor", 0, 7)
    x = np.random.default_rng(0).uniform(-0.2, 1.2, size=(64, 4)).astype(np.float32)
    agree = qi.agreement(p, res.model, x, batch=64)
    assert agree["codes_equal"] == 64


def test_not_onnx_is_a_clear_error(tmp_path):
    _require_extra()
    from softfloor import qonnx_import as qi
    (tmp_path / "bad.onnx").write_text("not a model")
    with pytest.raises(qi.QonnxImportError, match="not a readable ONNX model"):
        qi.import_qonnx(tmp_path / "bad.onnx")
    with pytest.raises(qi.QonnxImportError, match="no such ONNX file"):
        qi.import_qonnx(tmp_path / "missing.onnx")


def test_requant_ratios_become_exact_shifts_or_close_multipliers():
    """Pure Python (no extra needed): powers of two are exact; other ratios within 2**-29."""
    from softfloor import qonnx_import as qi
    assert qi._ratio_to_mult_shift(2.0 ** -7, 1000) == (1, 7, True)
    assert qi._ratio_to_mult_shift(8.0, 1000) == (8, 0, True)
    rng = np.random.default_rng(0)
    for r in 10.0 ** rng.uniform(-6, 3, size=300):
        for max_abs in (15, 1 << 20, 1 << 40):
            m, s, exact = qi._ratio_to_mult_shift(float(r), max_abs)
            assert not exact and 1 <= m < 1 << 31 and 0 <= s <= 62
            assert max_abs * m < 1 << 62                       # never overflows (validated)
            bits = min(31, 61 - max_abs.bit_length())
            assert abs(m / 2.0 ** s / r - 1) <= 2.0 ** -(bits - 2)


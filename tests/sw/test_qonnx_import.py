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


def _train_export(model, digits, shape, epochs, path, batch=64, lr=0.02) -> float:
    """A few epochs of Adam, then export_qonnx; returns the Brevitas test accuracy."""
    import torch
    from brevitas.export import export_qonnx

    from softfloor.benchmarks.qonnx import train
    xtr, ytr, xte, yte = digits
    train(model, xtr, ytr, shape, epochs, seed=0, lr=lr, batch=batch)
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


def _flow_rtl_equals_onnx(onnx_path, model, digits, n, tmp_path, sims=("verilator", "icarus")):
    """``flow --model`` (float inputs) on ``sims``: RTL == golden == ``execute_onnx`` on ``n``
    test samples, integer codes."""
    from softfloor import qonnx_import as qi
    for sim in sims:
        tools.ensure(sim)
    im.save(model, tmp_path / "model.intmodel.json")
    x, y = digits[2][:n], digits[3][:n]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    rc = cli.main(["flow", "--model", str(tmp_path / "model.intmodel.json"), "--inputs",
                   str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
                   "--simulator", "both" if len(sims) > 1 else sims[0], "--no-synth",
                   "--out", str(tmp_path / "flow"), "--quiet"])
    assert rc == 0
    rep = json.loads((tmp_path / "flow" / "report.json").read_text())
    vec = np.load(tmp_path / "flow" / "vectors.npz")
    ref = qi.execute_qonnx(onnx_path, x, batch=n)
    for sim in sims:
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


@pytest.mark.sim
@pytest.mark.slow
def test_flat_input_cnn_with_average_pooling_and_wide_weights_is_bit_exact(digits, tmp_path):
    """What Brevitas users export for flat inputs: ``x.view(-1, 1, 8, 8)`` before the input
    quantizer, ``AvgPool2d(2)``, ``TruncAvgPool2d(2)``, 12-bit conv and 10-bit dense weights:
    golden == execute_onnx on every test sample and every layer, then the RTL on both
    Icarus (``tests/sim/test_wide_weights.py`` puts wide weights through both simulators)."""
    from softfloor.benchmarks.qonnx import build
    model = build("cnn-view-trunc", 4, 4, "po2", "channel", channels=(4, 8))
    torch_acc = _train_export(model, digits, (64,), 2, tmp_path / "view.onnx", batch=128,
                              lr=0.05)
    res, agree = _import_and_compare(tmp_path / "view.onnx", digits)
    assert res.exact and res.model.input.shape == (1, 8, 8)
    assert res.model.meta["onnx_input_views"] and res.model.to_dict()["version"] == 3
    n = agree["samples"]
    assert agree["codes_equal"] == n and agree["argmax_equal"] == n
    assert set(agree["layers"].values()) == {n} and len(agree["layers"]) == 5
    assert agree["accuracy_golden"] == pytest.approx(torch_acc) and torch_acc > 0.5
    assert [(lay.name[:7], getattr(lay, "weight_bits", None)) for lay in res.model.layers
            if lay.op in ("conv2d", "dense")] == [("conv0", 4), ("avgpool", 2), ("conv4", 12),
                                                  ("avgpool", 2), ("fc9", 10)]
    _flow_rtl_equals_onnx(tmp_path / "view.onnx", res.model, digits, 30, tmp_path,
                          sims=("icarus",))


@pytest.mark.slow
def test_global_average_pooling_imports_exactly(digits, tmp_path):
    """``AdaptiveAvgPool2d(1)`` (exported as ``ReduceMean`` over H, W of a 4x4 map) and a
    QuantIdentity: golden == execute_onnx on every test sample."""
    from softfloor.benchmarks.qonnx import build
    model = build("cnn-view-global", 4, 4, "po2", "channel", channels=(4, 8))
    _train_export(model, digits, (64,), 1, tmp_path / "gap.onnx", batch=128, lr=0.05)
    res, agree = _import_and_compare(tmp_path / "gap.onnx", digits)
    gap = res.model.layers[6]
    assert res.exact and gap.op == "conv2d" and gap.kernel == (4, 4)
    assert "mean" in res.model.meta["onnx_nodes"][gap.name]
    assert agree["codes_equal"] == agree["samples"] == 360
    assert set(agree["layers"].values()) == {360}


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


def _wide_weights(nodes, const, quant, helper, bits=17):
    const("w2", np.linspace(-3, 3, 16, dtype=np.float32).reshape(4, 4))
    quant("w2", "w2q", 1 / 512, bits, 1)
    nodes.append(helper.make_node("MatMul", ["acc", "w2q"], ["y"], name="mm2"))
    return "y"


def _concat(nodes, const, quant, helper):
    nodes.append(helper.make_node("Concat", ["acc", "acc"], ["y"], name="cat", axis=1))
    return "y"


def _bipolar_act(nodes, const, quant, helper):
    return quant("acc", "y", 1.0, 1, 1)


@pytest.mark.parametrize("body, match", [
    (_sigmoid, r"node sig \(Sigmoid\): not supported"),
    (_ceil, r"node q_y \(Quant\): rounding_mode CEIL"),
    (_zero_point, r"node q_y \(Quant\): zero point"),
    (_residual, r"node res \(Add\): only adding a constant bias.*no residual adds.*single "
                r"chain"),
    (_concat, r"node cat \(Concat\): not supported; .*branches.*single chain"),
    (_wide_weights, r"node mm2 \(MatMul\): 17-bit weights; softfloor supports 1..16"),
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



# ----------------------------------------------------------------------------------------------
# Images: shape-only ops on the graph input, average pooling, Trunc (hand-built QONNX graphs).

def _image_graph(tmp_path, body, pre=("Reshape",), name="img"):
    """x (1, 32) -> ``pre`` (shape-only: Reshape to (1, 2, 4, 4), or a Transpose after it) ->
    Quant(u4, 2^-4) -> body(...) -> y."""
    _require_extra()
    import onnx
    from onnx import TensorProto, helper, numpy_helper as nh
    inits, nodes = [], []

    def const(nm, v, dtype=np.float32):
        inits.append(nh.from_array(np.asarray(v, dtype=dtype), nm))
        return nm

    def quant(inp, out, scale, bits, signed, rounding="ROUND"):
        nodes.append(helper.make_node(
            "Quant", [inp, const(out + "_s", scale), const(out + "_z", 0.0),
                      const(out + "_b", bits)], [out], name=f"q_{out}",
            domain="qonnx.custom_op.general", signed=signed, narrow=0, rounding_mode=rounding))
        return out
    t = "x"
    for i, op in enumerate(pre):
        if op == "Reshape":
            nodes.append(helper.make_node("Reshape", [t, const("shape", [-1, 2, 4, 4], np.int64)],
                                          ["view"], name="view"))
            t = "view"
        else:
            nodes.append(helper.make_node(op, [t], [f"pre{i}"], name=f"pre{i}",
                                          **({"perm": [0, 1, 3, 2]} if op == "Transpose" else {})))
            t = f"pre{i}"
    quant(t, "xq", 1 / 16, 4, 0)
    out = body(nodes, const, quant, helper)
    g = helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                      [1, 32])],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13),
                                            helper.make_opsetid("qonnx.custom_op.general", 2)])
    p = tmp_path / f"{name}.onnx"
    onnx.save(m, p)
    return p


def _avg(nodes, const, quant, helper, k=(2, 2), pads=(0, 0, 0, 0), include=1, then="quant"):
    nodes.append(helper.make_node("AveragePool", ["xq"], ["avg"], name="avg", kernel_shape=k,
                                  strides=k, pads=pads, count_include_pad=include))
    if then == "trunc":    # Brevitas TruncAvgPool2d: the window sum at 2^-6, to 4 bits at 2^-5
        nodes.append(helper.make_node(
            "Trunc", ["avg", const("ts", 1 / 64), const("tz", 0.0), const("tib", 6.0),
                      const("tos", 1 / 32), const("tob", 4.0)], ["tr"], name="trunc",
            domain="qonnx.custom_op.general", signed=0, narrow=0, rounding_mode="FLOOR"))
        t = "tr"
    else:
        t = quant("avg", "aq", 1 / 32, 4, 0, rounding="FLOOR")
    nodes.append(helper.make_node("Flatten", [t], ["y"], name="flat"))
    return "y"


def _global(nodes, const, quant, helper):
    nodes.append(helper.make_node("ReduceMean", ["xq"], ["m"], name="mean", axes=[2, 3],
                                  keepdims=0))
    return quant("m", "y", 1 / 64, 8, 0)


@pytest.mark.parametrize("body, pre, layers", [
    (_avg, ("Reshape",), ["avgpool0", "rq1", "flatten2"]),
    (lambda *a: _avg(*a, pads=(1, 1, 1, 1)), ("Reshape", "Identity"),
     ["avgpool0", "rq1", "flatten2"]),
    (lambda *a: _avg(*a, then="trunc"), ("Reshape",), ["avgpool0", "rq1", "flatten2"]),
    (lambda *a: _avg(*a, k=(4, 4)), ("Reshape",), ["avgpool0", "rq1", "flatten2"]),
    (_global, ("Reshape",), ["avgpool0", "flatten1", "rq2"]),
])
def test_reshaped_input_and_average_pooling_import_exactly(tmp_path, body, pre, layers):
    """A reshape of the flat graph input folds into the input spec; power-of-two average
    pooling (padded with count_include_pad, Trunc after it, global as ReduceMean) is a 0/1
    conv2d and a shift: every code equal to execute_onnx's, at ties too (inputs on the grid)."""
    from softfloor import qonnx_import as qi
    p = _image_graph(tmp_path, body, pre)
    res = qi.import_qonnx(p)
    assert res.exact and [lay.name for lay in res.model.layers] == layers
    assert res.model.input.shape == (2, 4, 4)
    assert res.model.meta["onnx_input_views"] == ["view"] + (["pre1"] if len(pre) > 1 else [])
    pool = res.model.layers[0]
    assert pool.op == "conv2d" and pool.weight_bits == 2
    assert np.array_equal(pool.weight.sum(axis=(2, 3)), np.eye(2) * pool.weight[0, 0].size)
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.integers(0, 16, size=(200, 32)) / 16,   # codes: every tie occurs
                        rng.uniform(-0.2, 1.2, size=(56, 32))]).astype(np.float32)
    agree = qi.agreement(p, res.model, x, batch=256)
    assert agree["codes_equal"] == 256 and agree["codes_on_grid"]
    assert agree["first_differing_layer"] is None


def _transpose_pre(tmp_path):
    return _image_graph(tmp_path, _avg, ("Reshape", "Transpose"))


@pytest.mark.parametrize("make, match", [
    (_transpose_pre, r"node pre1 \(Transpose\): permutes the graph input before its quantizer"),
    (lambda t: _image_graph(t, lambda *a: _avg(*a, k=(3, 3))),
     r"node avg \(AveragePool\): a 3x3 window averages 9 values; only power-of-two"),
    (lambda t: _image_graph(t, lambda *a: _avg(*a, pads=(1, 1, 1, 1), include=0)),
     r"node avg \(AveragePool\): padding with count_include_pad=0"),
])
def test_inexact_pooling_and_input_permutations_are_named(tmp_path, make, match):
    from softfloor import qonnx_import as qi
    with pytest.raises(qi.QonnxImportError, match=match):
        qi.import_qonnx(make(tmp_path))


def test_weights_wider_than_8_bits_import_exactly(tmp_path):
    """12-bit weights: accepted (the accumulator bound allows them), a version 3 model file,
    every code equal to execute_onnx's."""
    from softfloor import qonnx_import as qi
    p = _graph(tmp_path, lambda *a: _wide_weights(*a, bits=12))
    res = qi.import_qonnx(p)
    assert res.exact
    assert [lay.weight_bits for lay in res.model.layers if lay.op == "dense"] == [4, 12]
    assert res.model.required_version() == (3, "layers[1].weight_bits (12 > 8)")
    im.save(res.model, tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text())["version"] == 3
    x = np.random.default_rng(0).uniform(-0.2, 1.2, size=(64, 4)).astype(np.float32)
    assert qi.agreement(p, res.model, x, batch=64)["codes_equal"] == 64


def test_cli_errors_approximate_empty_and_wrong_check_shapes(tmp_path):
    """import-qonnx: an approximate import exits 2 unless --allow-approximate; an empty file
    and --check inputs of the wrong shape are one-line errors; nothing is written."""
    from tests.sw.errorcases import assert_one_line_error, run_cli

    def body(nodes, const, quant, helper):
        nodes.append(helper.make_node("Relu", ["acc"], ["r"], name="relu"))
        return quant("r", "y", 0.3, 3, 0, rounding="FLOOR")  # not a power of two
    p = _graph(tmp_path, body)
    out = tmp_path / "m.intmodel.json"
    rc, err = run_cli(["import-qonnx", p, "-o", out])
    assert_one_line_error(rc, err)
    assert "the import is approximate" in err and "--allow-approximate" in err
    assert not out.exists()
    np.save(tmp_path / "x.npy", np.zeros((3, 5), np.float32))
    rc, err = run_cli(["import-qonnx", p, "-o", out, "--allow-approximate",
                       "--check", tmp_path / "x.npy"])
    assert_one_line_error(rc, err)
    assert "--check" in err and "expected one row of 4 values" in err
    assert not out.exists()
    assert run_cli(["import-qonnx", p, "-o", out, "--allow-approximate"])[0] == 0
    assert im.load(out).name
    (tmp_path / "empty.onnx").write_bytes(b"")
    rc, err = run_cli(["import-qonnx", tmp_path / "empty.onnx", "-o", tmp_path / "e.json"])
    assert_one_line_error(rc, err)
    assert "empty file, not an ONNX model" in err

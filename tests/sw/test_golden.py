"""The golden model against an independent per-sample Python-int interpreter of docs/intmodel.md."""
import numpy as np
import pytest

from softfloor import arith, golden, intmodel as im
from tests.randcnn import random_cnn
from tests.randmodel import random_codes, random_model


def interpret(model: im.IntModel, sample) -> list[int]:
    """Plain Python ints and nested lists, one sample, straight from the documented semantics."""
    shape = list(model.input.shape)
    flat = [int(v) for v in np.asarray(sample).ravel()]
    if len(shape) == 3:
        c, h, w = shape
        x = [[[flat[(k * h + i) * w + j] for j in range(w)] for i in range(h)] for k in range(c)]
    else:
        x = flat
    for layer in model.layers:
        if isinstance(layer, im.Dense):
            x = [sum(int(wt) * v for wt, v in zip(row, x)) + int(b)
                 for row, b in zip(layer.weight.tolist(), layer.bias.tolist())]
        elif isinstance(layer, im.Requant):
            x = _map(x, lambda v, c: arith.requantize(v, layer.shift, layer.rounding, layer.lo,
                                                      layer.hi, layer.multiplier))
        elif isinstance(layer, im.ChannelRequant):
            x = _map(x, lambda v, c: arith.requantize(v, int(layer.shift[c]), layer.rounding,
                                                      layer.lo, layer.hi,
                                                      int(layer.multiplier[c])))
        elif isinstance(layer, im.MultiThreshold):
            rows = layer.thresholds.tolist()
            x = _map(x, lambda v, c: layer.out_bias + sum(
                1 for t in rows[c if len(rows) > 1 else 0] if t <= v))
        elif isinstance(layer, im.Flatten):
            x = _flatten(x)
        elif isinstance(layer, im.Conv2d):
            x = _conv(x, layer)
        elif isinstance(layer, im.MaxPool2d):
            x = _pool(x, layer)
        elif isinstance(layer, im.Lut):
            table = layer.table.tolist()
            x = _map(x, lambda v, c: table[v - layer.in_lo])
        elif isinstance(layer, im.Argmax):
            x = [x.index(max(x))]
        else:
            raise AssertionError(type(layer))
    return _flatten(x)


def _map(x, f):
    """Apply f(value, channel) elementwise; the channel is the first axis of the sample."""
    def rec(node, c):
        return [rec(v, c) for v in node] if isinstance(node, list) else f(node, c)
    return [rec(node, c) for c, node in enumerate(x)]


def _flatten(x):
    return [v for n in x for v in _flatten(n)] if isinstance(x, list) else [x]


def _conv(x, layer):
    c, h, w = len(x), len(x[0]), len(x[0][0])
    (kh, kw), (sy, sx), (pt, pl, pb, pr) = layer.kernel, layer.stride, layer.padding

    def at(k, i, j):
        i, j = i - pt, j - pl
        return x[k][i][j] if 0 <= i < h and 0 <= j < w else layer.pad_value
    oh, ow = (h + pt + pb - kh) // sy + 1, (w + pl + pr - kw) // sx + 1
    wt, b = layer.weight.tolist(), layer.bias.tolist()
    return [[[sum(wt[o][k][a][d] * at(k, i * sy + a, j * sx + d)
                  for k in range(c) for a in range(kh) for d in range(kw)) + b[o]
              for j in range(ow)] for i in range(oh)] for o in range(layer.out_channels)]


def _pool(x, layer):
    (kh, kw), (sy, sx) = layer.kernel, layer.stride
    h, w = len(x[0]), len(x[0][0])
    oh, ow = (h - kh) // sy + 1, (w - kw) // sx + 1
    return [[[max(ch[i * sy + a][j * sx + d] for a in range(kh) for d in range(kw))
              for j in range(ow)] for i in range(oh)] for ch in x]


@pytest.mark.parametrize("seed", range(5))
def test_golden_matches_interpreter(seed):
    rng = np.random.default_rng(seed)
    m = random_model(rng, (12, 9, 6, 3), worst_case=seed % 2 == 1)
    x = random_codes(rng, m, 50)
    out, inter = golden.run(m, x, intermediates=True)
    assert len(inter) == len(m.layers)
    assert out.dtype == np.int64
    for s in range(len(x)):
        assert out[s].tolist() == interpret(m, x[s])


@pytest.mark.parametrize("seed", range(12))
def test_golden_matches_interpreter_on_every_op(seed):
    """conv2d (strides, paddings, pad values), per-channel requant, maxpool, multithreshold."""
    rng = np.random.default_rng(100 + seed)
    m = random_cnn(rng, per_channel=seed % 2 == 0, threshold=seed % 3 != 0)
    x = random_codes(rng, m, 12)
    x[0] = m.input.code_type.lo      # the extremes too
    x[1] = m.input.code_type.hi
    out, inter = golden.run(m, x, intermediates=True)
    assert [a.shape[1:] for a in inter] == m.shapes()[1:]
    types = m.types()[1:]
    for a, t in zip(inter, types):   # every intermediate inside its derived worst-case range
        assert a.dtype == np.int64 and t.lo <= a.min() and a.max() <= t.hi
    for s in range(len(x)):
        assert out[s].tolist() == interpret(m, x[s])
    # Shaped (N, C, H, W) codes are accepted as well as flat rows.
    np.testing.assert_array_equal(golden.run(m, x.reshape((-1,) + m.input.shape)), out)


def test_blas_is_used_only_where_exact():
    """Wide accumulators (partial sums >= 2**53) fall back to exact int64 arithmetic."""
    w = np.full((2, 3), 127, dtype=np.int64)
    x = np.array([[(1 << 44) - 1, (1 << 44) - 1, 1]], dtype=np.int64)
    want = [[sum(int(a) * 127 for a in x[0])] * 2]
    assert im.exact_matmul(x, w).tolist() == want
    small = np.array([[3, -4, 5]])
    assert im.exact_matmul(small, w).tolist() == [[508, 508]]


def test_input_range_is_enforced_or_clipped():
    m = random_model(np.random.default_rng(0), (16, 8, 4), in_bits=4, in_signed=False)
    x = np.zeros((2, 16), dtype=np.int64)
    x[1, 3] = 16
    with pytest.raises(im.ModelFormatError, match=r"sample 1, element 3"):
        golden.run(m, x)
    np.testing.assert_array_equal(golden.run(m, x, clip=True)[1], golden.run(m, np.minimum(x, 15))[1])
    with pytest.raises(im.ModelFormatError, match="expects 16"):
        golden.run(m, np.zeros((1, 5), dtype=np.int64))
    with pytest.raises(im.ModelFormatError, match="integers"):
        golden.run(m, np.zeros((1, 16)))
    with pytest.raises(im.ModelFormatError, match="scalar"):
        golden.run(m, np.int64(3))


def test_narrow_input_range():
    m = random_model(np.random.default_rng(1), (4, 3), in_bits=8, in_signed=True)
    d = m.to_dict()
    d["input"].update(lo=-127, hi=127)
    nm = im.IntModel.from_dict(d | {"version": 2})
    assert nm.to_dict()["version"] == 2 and nm.input.code_type.lo == -127
    with pytest.raises(im.ModelFormatError, match="outside the input range"):
        golden.run(nm, np.full((1, 4), -128))
    assert golden.run(nm, np.full((1, 4), -128), clip=True).tolist() == \
        golden.run(nm, np.full((1, 4), -127)).tolist()
    # Real inputs saturate to the narrow range.
    assert nm.input.quantize(np.full((1, 4), -1e9)).min() == -127


def test_streaming_equals_batch():
    rng = np.random.default_rng(3)
    m = random_model(rng, (16, 8, 4))
    x = random_codes(rng, m, 300)
    chunks = [x[:100], x[100:250], x[250:]]
    np.testing.assert_array_equal(np.concatenate(list(golden.iter_run(m, chunks))), golden.run(m, x))


def test_streaming_from_a_memmap(tmp_path):
    rng = np.random.default_rng(4)
    m = random_cnn(rng)
    x = random_codes(rng, m, 500)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.int16, shape=x.shape)
    mm[:] = x
    mm.flush()
    src = np.load(tmp_path / "x.npy", mmap_mode="r")
    chunks = (src[i:i + 64] for i in range(0, len(src), 64))
    np.testing.assert_array_equal(np.concatenate(list(golden.iter_run(m, chunks))),
                                  golden.run(m, x))


def test_per_channel_output_scale_classifies_by_real_value():
    rng = np.random.default_rng(5)
    m = random_model(rng, (6, 3), final_requant=False)
    d = m.to_dict() | {"version": 2}
    d["output"]["scale"] = [1.0, 100.0, 1.0]
    pm = im.IntModel.from_dict(d)
    x = random_codes(rng, pm, 40)
    out = golden.run(pm, x)
    real = golden.dequantize(pm, out)
    np.testing.assert_array_equal(real, out * np.array([1.0, 100.0, 1.0]))
    np.testing.assert_array_equal(golden.predict(pm, x), np.argmax(real, axis=1))


def test_real_inputs_saturate_and_nan_is_a_model_format_error():
    m = random_model(np.random.default_rng(2), (3, 2), in_bits=4, in_signed=False)
    assert golden.run_real(m, np.array([[-5.0, 0.5, 1e9]])).shape == (1, m.output_size)
    assert m.input.quantize(np.array([[-5.0, 0.5, 1e9]])).tolist() == [[0, 1, 15]]
    with pytest.raises(im.ModelFormatError, match="NaN"):
        m.input.quantize(np.array([[0.1, float("nan"), 0.2]]))


@pytest.mark.parametrize("in_bits, bias", [(4, 3), (16, 1 << 20), (16, (1 << 46) - 1)])
def test_wide_convolutions_stay_exact(in_bits, bias):
    """float32 and float64 paths of the convolution (the bias is part of the exactness bound)."""
    rng = np.random.default_rng(in_bits)
    w = rng.integers(-128, 128, size=(2, 3, 3, 3))
    w[0] = 127                                     # one output channel at the worst case
    b = np.array([bias, -bias])
    spec = im.InputSpec((3, 4, 5), in_bits, True, 1.0)
    t = spec.code_type
    lo, hi = arith.dense_bounds(w.reshape(2, -1), b, t.lo, t.hi)
    acc = arith.bits_for_range(int(min(lo)), int(max(hi)))[0]
    m = im.IntModel(spec, [im.Conv2d("c", w, b, 8, 48, max(acc, 48), (1, 2), (1, 0, 1, 1), 0),
                           im.Flatten("f")], im.OutputSpec(1.0))
    x = random_codes(rng, m, 6)
    x[0], x[1] = t.hi, t.lo
    out = golden.run(m, x)
    for s in range(len(x)):
        assert out[s].tolist() == interpret(m, x[s])


def with_lut_and_argmax(rng, model: im.IntModel) -> im.IntModel:
    """``model`` with a random table after every Requant and an argmax at the end."""
    types, layers = model.types(), []
    for k, layer in enumerate(model.layers):
        layers.append(layer)
        if isinstance(layer, im.Requant):
            t = types[k + 1]
            ob, sg = int(rng.integers(1, 9)), bool(rng.integers(2))
            lo, hi = arith.code_range(ob, sg)
            in_lo = t.lo - int(rng.integers(0, 3))
            table = rng.integers(lo, hi + 1, size=t.hi - in_lo + 1 + int(rng.integers(0, 3)))
            layers.append(im.Lut(f"lut{k}", table, in_lo, ob, sg))
    shape = model.output_shape
    layers.append(im.Argmax("argmax", int(np.prod(shape))))
    return im.IntModel(model.input, layers, im.OutputSpec(1.0), model.name)


@pytest.mark.parametrize("seed", range(6))
def test_golden_matches_interpreter_with_lut_and_argmax(seed):
    rng = np.random.default_rng(300 + seed)
    m = with_lut_and_argmax(rng, random_model(rng, (10, 7, 5), final_requant=seed % 2 == 0))
    x = random_codes(rng, m, 80)
    out = golden.run(m, x)
    assert m.output_shape == (1,) and out.shape == (80, 1)
    for s in range(len(x)):
        assert out[s].tolist() == interpret(m, x[s])
    np.testing.assert_array_equal(golden.predict(m, x), out[:, 0])
    assert im.IntModel.from_dict(m.to_dict()).to_dict() == m.to_dict()
    assert m.to_dict()["version"] == 3


def test_argmax_takes_the_first_maximum():
    spec = im.InputSpec((4,), 4, True, 1.0)
    m = im.IntModel(spec, [im.Argmax("am", 4)], im.OutputSpec(1.0))
    x = np.array([[3, 7, 7, 1], [-8, -8, -8, -8], [0, 0, 0, 5]])
    assert golden.run(m, x)[:, 0].tolist() == [1, 0, 3]
    assert m.output_type == im.CodeType(2, False, 0, 3)

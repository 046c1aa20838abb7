"""Quantizers and quantized layers: code ranges, power-of-two scales, exactness vs arith."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from softfloor import arith
from softfloor.models import FloatMLP, QuantMLP
from softfloor.quant import (QuantHardTanh, QuantLinear, QuantReLU, WeightQuantizer, requant_params,
                             weight_code_range)

D = torch.float64


@pytest.mark.parametrize("bits, lo, hi", [(1, -1, 1), (2, -1, 1), (3, -4, 3), (4, -8, 7),
                                          (8, -128, 127)])
def test_weight_codes(bits, lo, hi):
    assert weight_code_range(bits) == (lo, hi)
    wq = WeightQuantizer(bits).double()
    w = torch.randn(64, 64, dtype=D, generator=torch.Generator().manual_seed(bits))
    wq.init_scale(w)
    c = wq.codes(w)
    assert c.dtype == torch.int64 and c.min() >= lo and c.max() <= hi
    if bits == 1:
        assert set(c.unique().tolist()) == {-1, 1}
    else:
        assert c.min() == lo or bits >= 4  # the LSQ init does not saturate much at 4+ bits
    s = wq.scale()
    assert s.item() == 2.0 ** wq.exp
    assert torch.equal(wq(w), s * c.to(D))
    want = torch.clamp(torch.floor(w / s + 0.5), lo, hi) if bits > 1 else \
        torch.where(w >= 0, 1.0, -1.0).to(D)
    assert torch.equal(c.to(D), want)


def test_weight_gradients_are_lsq_like():
    wq = WeightQuantizer(3).double()
    wq.log2_scale.data.fill_(-2.0)  # s = 1/4, codes [-4, 3] cover [-1, 0.75]
    w = torch.tensor([-2.0, -0.3, 0.1, 0.6, 5.0], dtype=D, requires_grad=True)
    wq(w).sum().backward()
    assert w.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # clipped straight-through
    assert wq.log2_scale.grad is not None and wq.log2_scale.grad != 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-5000, 5000), min_size=1, max_size=50), st.integers(0, 9),
       st.integers(1, 8))
def test_quant_relu_hard_is_arith_requantize(acc, shift, bits):
    act = QuantReLU(bits, "sigmoid").double()
    act.log2_scale.data.fill_(float(shift - 9))
    act.surrogate.hard = True
    acc_t = torch.tensor(acc, dtype=torch.int64)
    x = acc_t.to(D) * 2.0 ** -9  # an accumulator at scale 2**-9
    q = act(x) / 2.0 ** (shift - 9)
    want = arith.requantize(acc_t, shift, "half_up", 0, (1 << bits) - 1)
    assert torch.equal(q, want.to(D))


def test_quant_relu_soft_and_init():
    act = QuantReLU(4).double()
    x = torch.linspace(-2, 10, 1001, dtype=D)
    act.init_scale(x)
    assert act.exp == 0  # 99.9th percentile ~ 10 -> 10/15 -> 2**0
    act.surrogate.k = 1e-3  # soft, k -> 0: just ReLU clipped to [0, 15]
    assert torch.allclose(act(x), x.clamp(0, 15), atol=1e-3)
    assert "bits=4" in repr(act) and "sigmoid" in repr(act)


def test_quant_linear_is_integer_exact():
    torch.manual_seed(0)
    lin = QuantLinear(64, 32, weight_bits=4, bias_bits=8).double()
    codes = torch.randint(0, 16, (100, 64))
    in_exp = -4
    acc = lin(codes.to(D) * 2.0 ** in_exp, in_exp)
    w, b = lin.weight_codes(), lin.bias_codes(in_exp)
    want = codes @ w.T + b
    assert torch.equal(acc * 2.0 ** -(in_exp + lin.wq.exp), want.to(D))


def test_bias_is_clipped_to_bias_bits():
    lin = QuantLinear(4, 3, weight_bits=4, bias_bits=4).double()
    lin.bias.data = torch.tensor([100.0, -100.0, 0.0], dtype=D)
    assert lin.bias_codes(-4).tolist() == [7, -8, 0]


def test_requant_params():
    assert requant_params(-4, -4, -3) == (5, 1)
    assert requant_params(-4, -4, -8) == (0, 1)
    assert requant_params(-2, 1, -4) == (0, 8)  # a negative shift becomes a multiplier


@pytest.mark.parametrize("kw, match", [
    ({"weight_bits": 0}, "weight_bits must be an integer from 1 to 8"),
    ({"weight_bits": 9}, "weight_bits must be an integer from 1 to 8"),
    ({"act_bits": 0}, "act_bits must be an integer from 1 to 8"),
    ({"act_bits": 12}, "act_bits must be an integer from 1 to 8"),
    ({"input_bits": 9}, "input_bits must be an integer from 1 to 8"),
    ({"surrogate": "magic"}, "unknown surrogate 'magic'; choose one of"),
])
def test_bad_model_options(kw, match):
    with pytest.raises(ValueError, match=match):
        QuantMLP(**kw)


def test_models_shape_and_print():
    q, f = QuantMLP(), FloatMLP()
    x = torch.rand(5, 64)
    assert q(x).shape == (5, 10) and q(x).dtype == q.dtype == torch.float32
    assert f(x).shape == (5, 10)
    text = str(q)
    assert "64->64, bias_bits=16" in text and "QuantReLU(bits=4" in text
    assert sum(isinstance(m, torch.nn.Linear) for m in f.modules()) == 3
    assert np.all([a.exp == 0 for a in q.acts])  # before calibration


@pytest.mark.parametrize("bits", [1, 2, 3, 8])
@pytest.mark.parametrize("scale_grad", ["auto", "lsq"])
def test_fused_weight_quantizer_equals_the_composed_ste(bits, scale_grad):
    from softfloor.quant import grad_scale, lsq_grad_factor, pow2_scale
    wq = WeightQuantizer(bits, scale_grad).double()
    gen = torch.Generator().manual_seed(bits)
    w = torch.randn(16, 8, dtype=D, generator=gen).requires_grad_()
    g = torch.randn(16, 8, dtype=D, generator=gen)
    wq.init_scale(w)
    out = wq(w)
    (out * g).sum().backward()
    fused = (w.grad.clone(), wq.log2_scale.grad.clone())
    w.grad = wq.log2_scale.grad = None
    l2 = wq.log2_scale
    if scale_grad == "lsq":
        l2 = grad_scale(l2, lsq_grad_factor(w.numel(), wq.hi))
    ref = pow2_scale(l2) * wq.codes_float(w)
    (ref * g).sum().backward()
    assert torch.equal(out, ref) and torch.equal(fused[0], w.grad)
    assert fused[1].item() == pytest.approx(wq.log2_scale.grad.item(), rel=1e-12, abs=1e-15)


# ----------------------------------------------------------------------------------------------
# Per-output-channel weight scales


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("scale_grad", ["auto", "lsq"])
@pytest.mark.parametrize("shape", [(6, 5), (4, 3, 3, 3)])
def test_per_channel_quantizer_is_per_tensor_on_each_row(bits, scale_grad, shape):
    """Channel o of a per-channel quantizer == a per-tensor quantizer on row o alone: codes,
    values, gradients to the weights and to its own exponent."""
    from softfloor.quant import grad_scale, lsq_grad_factor, pow2_scale
    gen = torch.Generator().manual_seed(bits)
    w = torch.randn(*shape, dtype=D, generator=gen).requires_grad_()
    g = torch.randn(*shape, dtype=D, generator=gen)
    pc = WeightQuantizer(bits, scale_grad, channels=shape[0]).double()
    pc.init_scale(w)
    with torch.no_grad():  # spread the exponents so channels differ
        pc.log2_scale.add_(torch.arange(shape[0], dtype=D) - shape[0] // 2)
    out = pc(w)
    (out * g).sum().backward()
    assert pc.exp.dtype == torch.int64 and pc.exp.shape == (shape[0],)
    assert len(set(pc.exp.tolist())) > 1
    for o in range(shape[0]):
        pt = WeightQuantizer(bits, scale_grad).double()
        with torch.no_grad():
            pt.log2_scale.fill_(float(pc.log2_scale[o]))
        wo = w.detach()[o:o + 1].clone().requires_grad_()
        ref = pt(wo)
        (ref * g[o:o + 1]).sum().backward()
        assert pt.exp == int(pc.exp[o])
        assert torch.equal(out[o:o + 1], ref)
        assert torch.equal(pc.codes(w)[o:o + 1], pt.codes(wo))
        assert torch.equal(w.grad[o:o + 1], wo.grad)
        assert pc.log2_scale.grad[o].item() == pytest.approx(pt.log2_scale.grad.item(),
                                                             rel=1e-12, abs=1e-15)
    # the fused op equals the composed STE per channel too
    w.grad = pc.log2_scale.grad = None
    l2 = pc.log2_scale.reshape((-1,) + (1,) * (len(shape) - 1))
    if scale_grad == "lsq":
        l2 = grad_scale(l2, lsq_grad_factor(w[0].numel(), pc.hi))
    (pow2_scale(l2) * pc.codes_float(w) * g).sum().backward()
    fused = pc.log2_scale.grad.clone()
    pc.log2_scale.grad = None
    (pc(w) * g).sum().backward()
    assert torch.allclose(fused, pc.log2_scale.grad, rtol=1e-12, atol=1e-15)


def test_per_channel_init_scale_and_requant_params():
    wq = WeightQuantizer(4, channels=3).double()
    w = torch.tensor([[0.1, -0.1], [1.0, 1.0], [8.0, -8.0]], dtype=D)
    wq.init_scale(w)
    expect = [np.log2(2 * m / np.sqrt(7)) for m in (0.1, 1.0, 8.0)]
    assert torch.allclose(wq.log2_scale, torch.tensor(expect, dtype=D))
    shift, mult = requant_params(-4, torch.tensor([-3, -6, 1]), -5)
    assert shift.tolist() == [2, 5, 0] and mult.tolist() == [1, 1, 4]
    assert [requant_params(-4, e, -5) for e in (-3, -6, 1)] == [(2, 1), (5, 1), (0, 4)]


def _grads(params):
    out = [None if p.grad is None else p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    return out


def _assert_grads_close(a, b, terms=1):
    """Gradients of two computation orders equal up to their rounding.

    Elementwise ``rtol`` of 1e-10 (float64) / 1e-4 (float32), plus an absolute tolerance
    derived from the computation: a sum of ``terms`` products, each at most the largest
    gradient magnitude ``M`` of the pass, is exact to ``terms * eps * M`` whatever its order
    (twice that here, for the two orders compared). Entries that cancel to (near) zero carry
    rounding noise of that size, which differs between CPUs and BLAS kernels.
    """
    mags = [float(g.abs().max()) for g in b if g is not None and g.numel()]
    big = max(mags + [1.0])
    for ga, gb in zip(a, b, strict=True):
        assert (ga is None) == (gb is None)
        if ga is not None:
            rtol = 1e-10 if ga.dtype == torch.float64 else 1e-4
            atol = 2 * terms * torch.finfo(ga.dtype).eps * big
            assert torch.allclose(ga, gb, rtol=rtol, atol=atol), (ga, gb, atol)


@pytest.mark.parametrize("surrogate", ["ste", "ste_plain", "sigmoid", "fourier", "dsq_hard",
                                       "lsq", "dsq"])
@pytest.mark.parametrize("hard", [False, True])
def test_fused_activation_equals_the_composed_one(surrogate, hard):
    act = QuantReLU(2, surrogate).double()
    act.surrogate.k, act.surrogate.hard = 3.0, hard
    if not act.fusable():  # dsq while soft learns its sharpness: composed only
        assert surrogate == "dsq" and not hard
        return
    gen = torch.Generator().manual_seed(7)
    x = (3 * torch.randn(32, 6, dtype=D, generator=gen)).requires_grad_()
    x.data[0, :3] = torch.tensor([0.5, 1.5, 3.5])  # ties and the top clip edge, in grid units
    g = torch.randn(32, 6, dtype=D, generator=gen)
    act.init_scale(x)
    params = [x] + list(act.parameters())
    out = act(x)
    (out * g).sum().backward()
    fused = _grads(params)
    ref = act.forward_composed(x)
    (ref * g).sum().backward()
    assert torch.equal(out, ref)
    _assert_grads_close(fused, _grads(params))


def test_binary_triangle_gradient_closed_form():
    """binary_grad="triangle": the same 1-bit codes, the gradient max(0, 1 - |v - 1/2| / 2)
    (the box: 1 on [-1/2, 3/2)), fused and composed alike, the scale's gradient from it."""
    from softfloor.quant import binary_triangle_grad
    v = torch.tensor([-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0], dtype=D)
    tri = torch.tensor([0, 0, 0.25, 0.5, 0.75, 1, 0.75, 0.5, 0.25, 0, 0], dtype=D)
    assert torch.equal(binary_triangle_grad(v), tri)
    box = torch.tensor([0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0], dtype=D)
    grads = {}
    for shape in ("box", "triangle"):
        act = QuantReLU(1, "ste", binary_grad=shape).double()
        act.log2_scale.data.fill_(-1.0)                     # s = 1/2: x = v / 2
        outs = []
        for path in (act.forward, act.forward_composed):
            x = (v / 2).clone().requires_grad_()
            y = path(x)
            y.sum().backward()
            outs.append((y.detach(), x.grad, act.log2_scale.grad.clone()))  # dy/dx = R'(v)
            act.log2_scale.grad = None
        (y0, dx0, dl0), (y1, dx1, dl1) = outs
        assert torch.equal(y0, y1) and torch.equal(dx0, dx1)
        assert torch.allclose(dl0, dl1, rtol=1e-12)
        assert torch.equal(y0, (v >= 0.5).to(D) * 0.5)
        grads[shape] = dx0
    assert torch.equal(grads["box"], box) and torch.equal(grads["triangle"], tri)


def test_binary_grad_applies_to_straight_through_gradients_only():
    """A smooth surrogate's gradient (sigmoid while soft, or its smooth hard phase) is not
    reshaped; sigmoid's hard phase with hard_grad="ste" is; wider codes refuse the triangle."""
    from softfloor.surrogates import make_surrogate
    from softfloor.quant import check_binary_grad
    gen = torch.Generator().manual_seed(3)
    x = 3 * torch.randn(64, dtype=D, generator=gen)
    for sur, hard, same in (("sigmoid", False, True), ("sigmoid", True, True),
                            ("ste", False, False)):
        gs = []
        for shape in ("box", "triangle"):
            act = QuantReLU(1, sur, binary_grad=shape).double()
            act.surrogate.k, act.surrogate.hard = 3.0, hard
            xx = x.clone().requires_grad_()
            act(xx).sum().backward()
            gs.append(xx.grad)
        assert torch.equal(gs[0], gs[1]) == same, (sur, hard)
    act = QuantReLU(1, make_surrogate("sigmoid", hard_grad="ste"), binary_grad="triangle")
    act.double().surrogate.hard = True
    xx = x.clone().requires_grad_()
    act(xx).sum().backward()
    from softfloor.quant import binary_triangle_grad
    s = 2.0 ** act.exp
    assert torch.allclose(xx.grad, binary_triangle_grad(x / s))
    with pytest.raises(ValueError, match="2-bit activations"):
        QuantReLU(2, "ste", binary_grad="triangle")
    with pytest.raises(ValueError, match="binary_grad must be one of"):
        check_binary_grad("hat", 1)


@pytest.mark.parametrize("surrogate", ["ste", "sigmoid"])
def test_fused_network_with_the_triangle_equals_the_composed_one(surrogate):
    """w1a1 with binary_act_grad="triangle": the fused step and the composed layers agree."""
    torch.manual_seed(5)
    m = QuantMLP((16, 12, 8, 10), 1, 1, 1, surrogate, binary_act_grad="triangle", dtype=D)
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(0, 2, (24, 16), generator=gen).to(D)
    y = torch.randint(0, 10, (24,), generator=gen)
    m.calibrate(x)
    m.train()
    m.set_surrogate(4.0, True)
    assert m.fusable() and all(a.binary_grad == "triangle" for a in m.acts)
    params = list(m.parameters())
    x = x.requires_grad_()
    out = m(x)
    torch.nn.functional.cross_entropy(out, y).backward()
    fused = _grads(params + [x])
    for p in params + [x]:
        p.grad = None
    ref = m.forward_composed(x)
    torch.nn.functional.cross_entropy(ref, y).backward()
    assert torch.equal(out, ref)
    _assert_grads_close(fused, _grads(params + [x]))


@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("bn", [None, "fold", "threshold"])
def test_fused_linear_equals_the_composed_one(bits, bn):
    lin = QuantLinear(12, 5, bits, 8, bn=bn).double()
    gen = torch.Generator().manual_seed(bits)
    x = torch.rand(16, 12, dtype=D, generator=gen).requires_grad_()
    g = torch.randn(16, 5, dtype=D, generator=gen)
    params = [x] + list(lin.parameters())
    out = lin(x, -4)
    (out * g).sum().backward()
    fused = _grads(params)
    ref = lin.forward_composed(x, -4)
    (ref * g).sum().backward()
    assert torch.equal(out, ref)
    _assert_grads_close(fused, _grads(params))


@pytest.mark.parametrize("wb, ab, bn", [(4, 4, False), (2, 2, False), (1, 1, True), (2, 1, True),
                                        (1, 2, False), (2, 2, True), (1, 2, True), (4, 4, True)])
@pytest.mark.parametrize("surrogate", ["ste", "sigmoid", "fourier", "lsq", "dsq"])
@pytest.mark.parametrize("hard", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("per_channel", [False, True])
def test_fused_network_equals_the_composed_one(wb, ab, bn, surrogate, hard, dtype, per_channel):
    """The whole-network autograd op (QuantMLP.forward) against the layers composed with
    autograd: the same outputs bit for bit, the same gradients (of the input too: learned
    input thresholds train through it), the same BatchNorm updates (in float64 and in float32,
    the dtype the digits MLP trains in), with per-tensor and per-channel weight scales."""
    torch.manual_seed(wb * 10 + ab)
    m = QuantMLP((16, 12, 8, 10), wb, ab, 3, surrogate, batchnorm=bn, dtype=dtype,
                 per_channel=per_channel)
    if per_channel:  # exponents that differ per channel (the init gives a spread too)
        for lin in m.linears[:-1]:
            assert lin.wq.per_channel
            lin.wq.log2_scale.data += torch.arange(lin.out_features) % 3 - 1.0
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 8, (24, 16), generator=gen).to(D) / 8
    y = torch.randint(0, 10, (24,), generator=gen)
    m.calibrate(x)
    m.train()
    m.set_surrogate(4.0, hard)
    fusable = m.fusable()
    assert fusable == (surrogate != "dsq" or hard)
    params = list(m.parameters())
    buffers = [b.clone() for b in m.buffers()]
    x = x.to(dtype).requires_grad_()
    out = m(x)
    torch.nn.functional.cross_entropy(out, y).backward()
    fused, fused_buffers = _grads(params + [x]), [b.clone() for b in m.buffers()]
    for b, saved in zip(m.buffers(), buffers):
        b.copy_(saved)
    x.grad = None
    ref = m.forward_composed(x)
    torch.nn.functional.cross_entropy(ref, y).backward()
    assert torch.equal(out, ref)
    # gradients up to ~300 whose near-zero entries cancel, computed from g.t() @ x here and
    # from addmm's backward there: sums over the batch
    _assert_grads_close(fused, _grads(params + [x]), terms=len(x))
    x = x.detach()
    for a, b in zip(fused_buffers, m.buffers()):
        assert torch.equal(a, b)
    with torch.no_grad():
        assert torch.equal(m(x), m.forward_composed(x))


# ----------------------------------------------------------------------------------------------
# QuantHardTanh: signed activation codes


def test_quant_hardtanh_ties_clip_edges_and_gradients():
    """3-bit signed codes [-4, 3] at scale 1: ties round half up (also below zero), the clip
    edges pass the gradient only while the rounded code is in range; the scale's gradient is
    LSQ's ``q - v`` inside and ``q`` where clipped (times ``s ln 2``)."""
    act = QuantHardTanh(3, "ste").double()
    assert (act.lo, act.hi) == (-4, 3) and not act.fusable()
    act.surrogate.hard = True
    x = torch.tensor([-9.0, -4.51, -4.5, -3.5, -2.5, -0.5, 0.0, 0.5, 2.5, 3.49, 3.5, 9.0],
                     dtype=D, requires_grad=True)
    y = act(x)
    assert y.tolist() == [-4, -4, -4, -3, -2, 0, 0, 1, 3, 3, 3, 3]
    inside = [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]
    g = torch.linspace(0.5, 2.0, len(x), dtype=D)
    (y * g).sum().backward()
    assert x.grad.tolist() == (g * torch.tensor(inside, dtype=D)).tolist()
    q, v, m = y.detach(), x.detach(), torch.tensor(inside, dtype=D)
    want = float((g * (q - v * m)).sum() * math.log(2))
    assert act.log2_scale.grad.item() == pytest.approx(want, rel=1e-12)
    assert "codes=[-4, 3]" in repr(act)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-5000, 5000), min_size=1, max_size=50), st.integers(0, 9),
       st.integers(2, 8), st.sampled_from(["sigmoid", "ste", "dsq", "fourier", "pact"]))
def test_quant_hardtanh_hard_is_arith_requantize(acc, shift, bits, surrogate):
    act = QuantHardTanh(bits, surrogate).double()
    act.log2_scale.data.fill_(float(shift - 9))
    act.surrogate.hard = True
    acc_t = torch.tensor(acc, dtype=torch.int64)
    q = act(acc_t.to(D) * 2.0 ** -9) / 2.0 ** (shift - 9)
    lo, hi = arith.code_range(bits, True)
    assert torch.equal(q, arith.requantize(acc_t, shift, "half_up", lo, hi).to(D))


@pytest.mark.parametrize("surrogate", ["sigmoid", "fourier", "dsq", "ste_plain"])
def test_quant_hardtanh_soft_gradients_and_init(surrogate):
    act = QuantHardTanh(4, surrogate).double()
    x = torch.linspace(-10, 10, 1001, dtype=D)
    act.init_scale(x)
    assert act.exp == 1  # 99.9th percentile of |x| ~ 10 -> 10/7 -> 2**1
    act.surrogate.k = 1e-3 if surrogate != "dsq" else act.surrogate.k
    xs = (3 * x).requires_grad_()  # beyond both clip levels
    y = act(xs)
    if surrogate in ("sigmoid", "fourier"):  # k -> 0: hardtanh clipped to [-16, 14]
        assert torch.allclose(y, xs.detach().clamp(-16, 14), atol=1e-2)
    y.sum().backward()
    assert torch.isfinite(xs.grad).all() and torch.isfinite(act.log2_scale.grad)
    if surrogate == "ste_plain":  # the plain STE passes the clamp too
        assert torch.all(xs.grad == 1)
    else:
        assert xs.grad[0] == 0 and xs.grad[-1] == 0 and xs.grad[500] > 0


def test_quant_hardtanh_pact_clips_both_ends():
    """PACT: the clip level learns from the inputs beyond either end (``d y / d s`` is ``lo`` below
    ``s lo``, ``hi`` above ``s hi``), and only from those."""
    act = QuantHardTanh(3, "pact").double()
    act.surrogate.hard = True
    x = torch.tensor([-7.0, -1.2, 0.3, 2.0, 5.0], dtype=D)
    (act(x) * torch.tensor([1.0, 10.0, 10.0, 10.0, 2.0], dtype=D)).sum().backward()
    assert act.log2_scale.grad.item() == pytest.approx((-4 * 1 + 3 * 2) * math.log(2))


def test_hardtanh_one_bit_and_unknown_activation_are_errors():
    from softfloor.train import TrainConfig
    with pytest.raises(ValueError, match=r"act_bits 1 is not supported with hardtanh.*\{-1, 0\}"
                                         r".*BatchNorm"):
        QuantHardTanh(1)
    with pytest.raises(ValueError, match=r"act_bits 1 is not supported with activation "
                                         r"'hardtanh'.*integer threshold"):
        TrainConfig(activation="hardtanh", act_bits=1)
    with pytest.raises(ValueError, match="unknown activation 'tanh'; choose one of relu, hardtanh"):
        QuantMLP(activation="tanh")
    with pytest.raises(ValueError, match="unknown activation"):
        TrainConfig(activation="tanh")


def test_hardtanh_mlp_is_composed_and_integer_layers_are_signed():
    m = QuantMLP((16, 12, 8, 10), 4, 3, 3, "ste", activation="hardtanh")
    assert not m.fusable() and all(isinstance(a, QuantHardTanh) for a in m.acts)
    gen = torch.Generator().manual_seed(2)
    x = torch.randint(0, 8, (40, 16), generator=gen).to(D) / 8
    m.calibrate(x)
    m.set_surrogate(4.0, True)
    assert torch.equal(m(x), m.forward_composed(x))
    for layer in m.integer_layers()[:-1]:
        assert layer.requant[2:4] == (-4, 3)


# ----------------------------------------------------------------------------------------------
# Free scales: integer multiplier + shift


def test_grad_scale_keeps_the_value_exactly():
    from softfloor.quant import grad_scale
    x = torch.tensor([0.3, 1 / 3, -2.7, 1e-9, 12345.678], dtype=D, requires_grad=True)
    y = grad_scale(x, 0.1)
    assert torch.equal(y, x)  # bit for bit: free scales use the value as is
    y.sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, 0.1))


@settings(max_examples=300, deadline=None)
@given(st.floats(-40, 14))
def test_free_requant_params_realise_the_ratio(log2_ratio):
    from softfloor.quant import MULT_BITS, free_requant_params
    shift, m = free_requant_params(log2_ratio)
    assert 0 <= shift <= 62 and 1 <= m < 1 << MULT_BITS
    assert m % 2 == 1 or shift == 0  # trailing zero bits dropped
    r = 2.0 ** log2_ratio
    assert abs(m * 2.0 ** -shift - r) <= r * 2.0 ** -MULT_BITS


def test_free_requant_params_edges():
    from softfloor.quant import free_requant_params
    assert free_requant_params(0.0) == (0, 1)
    assert free_requant_params(math.log2(3 / 8)) == (3, 3)
    assert free_requant_params(-3.0) == (3, 1)
    assert free_requant_params(20.0) == (0, 1 << 20)  # a large ratio: shift 0, wider multiplier
    assert free_requant_params(math.log2(2 ** 16 - 0.4)) == (0, 1 << 16)  # rounded up to 2**16
    with pytest.raises(ValueError, match="above the integer model's limit"):
        free_requant_params(40.0)


def _free_pair(wb, ab, surrogate, bn, activation="relu", per_channel=False):
    """A po2 and a free MLP with the same parameters and integer log2 scales."""
    torch.manual_seed(3)
    kw = dict(sizes=(16, 12, 8, 10), weight_bits=wb, act_bits=ab, input_bits=3,
              surrogate=surrogate, batchnorm=bn, activation=activation, per_channel=per_channel)
    po2, free = QuantMLP(**kw, dtype=D), QuantMLP(**kw, scales="free")
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 8, (24, 16), generator=gen).to(D) / 8
    po2.calibrate(x)
    with torch.no_grad():  # po2 rounds its exponents: make them integers for the free twin
        for p in [lin.wq.log2_scale for lin in po2.linears] + [a.log2_scale for a in po2.acts]:
            p.copy_(torch.floor(p + 0.5))
    free.load_state_dict(po2.state_dict())
    return po2, free, x, torch.randint(0, 10, (24,), generator=gen)


@pytest.mark.parametrize("wb, ab, bn, pc", [(4, 4, False, False), (2, 2, True, False),
                                            (1, 1, False, False), (3, 5, True, False),
                                            (4, 3, False, True), (2, 2, True, True)])
@pytest.mark.parametrize("surrogate", ["ste", "sigmoid", "lsq", "dsq", "ste_plain"])
@pytest.mark.parametrize("hard", [False, True])
def test_free_scales_at_powers_of_two_are_the_po2_network(wb, ab, bn, pc, surrogate, hard):
    """With every log2 scale an integer, the code-domain forward of free scales is the po2
    network: the same logits (up to the rounding of the real scale), the same codes in the hard
    phase, and the same gradients for every parameter (the multiplier straight through);
    per-tensor and per-channel weight scales."""
    po2, free, x, y = _free_pair(wb, ab, surrogate, bn, per_channel=pc)
    for m in (po2, free):
        m.train()
        m.set_surrogate(4.0, hard)
    assert not free.fusable()
    grads = []
    for m in (po2, free):
        out = m(x)
        torch.nn.functional.cross_entropy(out, y).backward()
        grads.append([None if p.grad is None else p.grad.clone() for p in m.parameters()])
        m.zero_grad()
    assert torch.allclose(po2(x), free(x), rtol=1e-12, atol=1e-12)
    for ga, gb in zip(*grads, strict=True):
        assert (ga is None) == (gb is None)
        if ga is not None:
            assert torch.allclose(ga, gb, rtol=1e-9, atol=1e-12), (ga, gb)
    if hard:
        po2.eval(), free.eval()
        for a, b in zip(po2.integer_layers(), free.integer_layers(), strict=True):
            assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
            assert repr(a.requant) == repr(b.requant)


def test_free_scales_forward_is_arith_requantize_on_every_layer():
    """Arbitrary real scales: the hard forward's codes, layer by layer, are the integer layers
    run with arith.requantize (multiplier + shift)."""
    po2, free, x, _ = _free_pair(4, 3, "sigmoid", False, "hardtanh")
    with torch.no_grad():
        for p in [lin.wq.log2_scale for lin in free.linears] + [a.log2_scale for a in free.acts]:
            p.add_(torch.rand((), dtype=D) - 0.5)
    free.set_surrogate(20.0, True)
    trace = []
    with torch.no_grad():
        out = free.forward_free(x, codes=True, trace=trace)
    q = (x * 8).to(torch.int64)
    mults = []
    for layer, want in zip(free.integer_layers(), zip(trace[0::2], trace[1::2] + [out])):
        acc = q @ layer.weight.T + layer.bias
        assert torch.equal(acc.to(D), want[0])
        if layer.requant is not None:
            shift, mode, lo, hi, m = layer.requant
            assert (mode, lo, hi) == ("half_up", -4, 3)
            mults.append(m)
            q = arith.requantize(acc, shift, mode, lo, hi, m)
            assert torch.equal(q.to(D), want[1])
    assert any(m & (m - 1) for m in mults)  # not only powers of two


@pytest.mark.parametrize("kw, match", [
    ({"surrogate": "pact"}, "not implemented with the 'pact' surrogate"),
    ({"act_bits": 1, "batchnorm": True}, "not implemented with BatchNorm before 1-bit"),
])
def test_free_scales_limits_are_errors(kw, match):
    from softfloor.train import TrainConfig
    with pytest.raises(ValueError, match=match + ".*use scales 'po2'"):
        TrainConfig(scales="free", **kw)
    with pytest.raises(ValueError, match=match):
        QuantMLP(scales="free", **kw)
    with pytest.raises(ValueError, match="unknown scales 'pow2'; choose one of po2, free"):
        TrainConfig(scales="pow2")
    lin = QuantLinear(4, 3, free_scale=True).double()
    with pytest.raises(RuntimeError, match="forward_free"):
        lin(torch.zeros(2, 4, dtype=D), -4)


@pytest.mark.parametrize("sizes,wb,ab,bits,dtype", [
    ((64, 64, 32, 10), 8, 8, 22, torch.float32),      # 64*255*128 + 2**15: the digits MLP, w8a8
    ((64, 64, 32, 10), 1, 1, 16, torch.float32),      # the bias dominates
    ((1024, 64, 10), 8, 8, 25, torch.float64),         # 1024*255*128 > 2**24
])
def test_exact_dtype_from_the_worst_case_accumulator(sizes, wb, ab, bits, dtype):
    m = QuantMLP(sizes, wb, ab, ab)
    assert m.worst_case_acc_bits() == bits and m.exact_dtype() == m.dtype == dtype
    if dtype == torch.float64:
        with pytest.raises(ValueError, match="not exact in torch.float32.*25 bits"):
            QuantMLP(sizes, wb, ab, ab, dtype=torch.float32)
    assert QuantMLP(sizes, wb, ab, ab, dtype=torch.float64).dtype == torch.float64


def test_float32_hard_forward_is_exact_at_the_worst_case():
    """At the largest codes the float32 hard forward still equals the integer forward."""
    from softfloor.train import float_hard_codes, hard_codes
    torch.manual_seed(0)
    m = QuantMLP((64, 64, 32, 10), 8, 8, 8)
    assert m.dtype == torch.float32
    with torch.no_grad():
        for lin in m.linears:  # weights at the most negative code, the bias near its top
            lin.wq.log2_scale.fill_(-7.0)
            lin.weight.fill_(-1.0)
            lin.bias.fill_(0.0)
        for a in m.acts:
            a.log2_scale.fill_(-1.0)
    codes = np.full((3, 64), 255)
    codes[1] = 0
    codes[2, ::2] = 0
    assert np.array_equal(float_hard_codes(m, codes), hard_codes(m, codes))


def test_sign_code_is_the_one_binary_rule():
    """1-bit weight codes: +1 at and above zero (also -0.0), -1 below; the fused op, the STE op
    and the exported codes all use it."""
    from softfloor.quant import WeightQuantizer, sign_code
    v = torch.tensor([-0.0, 0.0, -1e-30, 1e-30, 2.0, -3.0], dtype=D)
    assert sign_code(v).tolist() == [1, 1, -1, 1, 1, -1] and sign_code(v).dtype == D
    wq = WeightQuantizer(1)
    wq.log2_scale.data.fill_(0.0)
    assert wq.codes(v).tolist() == [1, 1, -1, 1, 1, -1]



def _gate_reference(acc, direction, t):
    """The threshold rule itself, in float64: ``acc >= t`` (direction +1), ``acc <= t`` (-1),
    constant ``t > 0`` (0)."""
    acc = acc.to(torch.float64)
    out = torch.where(direction > 0, acc >= t,
                      torch.where(direction < 0, acc <= t, (t > 0).expand_as(acc)))
    return out.to(torch.int64)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_threshold_bound_decides_as_the_threshold_rule(dtype):
    """The training forward's threshold form against threshold() and the rule: every
    direction (gamma > 0, < 0, == 0 firing or not), thresholds inside and beyond the
    accumulators, accumulators on and next to every threshold."""
    gen = torch.Generator().manual_seed(5)
    lin = QuantLinear(8, 12, 2, 8, bn="threshold").to(dtype)
    with torch.no_grad():
        lin.bn.gamma.copy_(torch.tensor([1.5, -0.7, 0.0, 0.0, 2.0, -3.0, 1e-30, -1e-30, 0.3, -0.3,
                                         1.0, -1.0]))
        lin.bn.beta.copy_(torch.randn(12, generator=gen, dtype=dtype))
        lin.bn.beta[2], lin.bn.beta[3] = 5.0, -5.0
        lin.bn.running_mean.copy_(3 * torch.randn(12, generator=gen, dtype=dtype))
        lin.bn.running_var.copy_(torch.rand(12, generator=gen, dtype=dtype) + 0.1)
        direction, t = lin.threshold(-3, -2)
        direction_f, bound = lin.threshold_bound(-3, -2, lin.wq.exp)
    finite = t[torch.isfinite(t)]
    near = torch.cat([finite - 1, finite, finite + 1]).to(dtype)
    acc = torch.cat([torch.randint(-200, 201, (64,), generator=gen).to(dtype), near])
    acc = acc[:, None].expand(-1, 12)
    ref = _gate_reference(acc, direction, t)
    fires = acc * direction_f >= bound
    assert torch.equal(fires.to(torch.int64), ref)
    assert ref[:, 2].eq(1).all() and ref[:, 3].eq(0).all()  # the constant channels
    assert (t[6:8].abs() > 2 ** 24).all()  # gamma ~ 0: beyond every accumulator


def test_threshold_bound_decides_as_the_exported_layer():
    """The training forward's threshold decision equals the exported 1-bit layer's
    (``models._threshold_layer``: ``clamp(acc', 0, 1)``) on every binary input of a small
    layer, with thresholds on reachable accumulators (ties included) and every direction."""
    from softfloor.models import _threshold_layer
    gen = torch.Generator().manual_seed(11)
    lin = QuantLinear(8, 12, 1, 8, bn="threshold").double()
    in_exp, act_exp = 0, -1
    w_exp = lin.wq.exp
    s_acc = 2.0 ** (in_exp + w_exp)
    with torch.no_grad():
        lin.bn.gamma.copy_(torch.tensor([1.0, -1.0, 0.0, 0.0, 2.0, -0.5, 1.0, -1.0, 3.0, -3.0,
                                         0.7, -0.7], dtype=torch.float64))
        lin.bn.running_var.fill_(1.0 - lin.bn.eps)  # sigma = 1
        lin.bn.beta.fill_(2.0 ** act_exp / 2)         # fires at the mean: t = mean / s_acc
        lin.bn.beta[2], lin.bn.beta[3] = 1.0, -1.0    # the constant channels: always / never
        lin.bn.beta[10] += 0.3
        lin.bn.running_mean.copy_(s_acc * torch.randint(-5, 6, (12,), generator=gen))
    wc = lin.weight_codes()
    bc = lin.bias_codes(in_exp)
    x = torch.tensor([[(k >> j) & 1 for j in range(8)] for k in range(256)], dtype=torch.int64)
    acc = x @ wc.T + bc
    direction, t = lin.threshold(in_exp, act_exp)
    w2, b2 = _threshold_layer(wc, bc, direction, t, 0, 1)
    exported = torch.clamp(x @ w2.T + b2, 0, 1)
    with torch.no_grad():
        d, bound = lin.threshold_bound(in_exp, act_exp, w_exp)
    fires = (acc.to(torch.float64) * d >= bound).to(torch.int64)
    assert torch.equal(fires, exported)
    assert torch.equal(fires, _gate_reference(acc, direction, t))
    assert fires[:, 2].eq(1).all() and fires[:, 3].eq(0).all()
    ties = (acc == t.to(torch.int64)) & (direction != 0)
    assert ties.any()  # some accumulators sit exactly on a threshold


def test_pact_penalty_is_the_papers_l2_of_the_clip_levels():
    """decay * sum(alpha**2), alpha = 2**log2_scale * hi before the power-of-two rounding, so
    the gradient reaches log2_scale: d/de decay * (hi 2**e)**2 = 2 ln 2 decay (hi 2**e)**2."""
    from softfloor.quant import PACT_DECAY, pact_penalty
    a2, a1 = QuantReLU(2, "pact").double(), QuantReLU(1, "pact").double()
    a2.log2_scale.data.fill_(0.3)
    a1.log2_scale.data.fill_(-1.6)
    p = pact_penalty([a2, a1], 0.01)
    alpha2, alpha1 = 3 * 2 ** 0.3, 1 * 2 ** -1.6
    assert p.item() == pytest.approx(0.01 * (alpha2 ** 2 + alpha1 ** 2), rel=1e-12)
    p.backward()
    assert a2.log2_scale.grad.item() == pytest.approx(2 * math.log(2) * 0.01 * alpha2 ** 2,
                                                      rel=1e-12)
    assert a1.log2_scale.grad.item() == pytest.approx(2 * math.log(2) * 0.01 * alpha1 ** 2,
                                                      rel=1e-12)
    # only PACT's quantizers, and nothing at decay 0
    assert pact_penalty([QuantReLU(2, "ste"), QuantReLU(2, "lsq")], PACT_DECAY) is None
    assert pact_penalty([a2], 0.0) is None

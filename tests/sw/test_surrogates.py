"""Rounding surrogates: the corrected sigmoid staircase, its gradient, limits and the mistakes."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from softfloor import arith
from softfloor.surrogates import (SURROGATES, AnnealSchedule, HardRoundSmoothGradFn,
                                  SigmoidSurrogate, SmoothRoundFn, STESurrogate, jump_variant,
                                  make_surrogate, round_half_up, round_up_bit, smooth_floor,
                                  smooth_round, smooth_round_grad)

D = torch.float64


def grid(lo=-3.0, hi=3.0, n=60001):
    return torch.linspace(lo, hi, n, dtype=D)


def away_from_integers(n=200, seed=0, margin=0.05):
    g = torch.Generator().manual_seed(seed)
    base = torch.randint(-4, 4, (n,), generator=g).to(D)
    frac = margin + (1 - 2 * margin) * torch.rand(n, generator=g, dtype=D)
    return base + frac


# -- the starting formula and the tempting variant are wrong ---------------------------------

def test_uncorrected_formula_is_not_a_floor():
    x = grid()
    err = (round_up_bit(x, 10.0) - torch.floor(x)).abs().max()
    assert err > 1  # ~3 at x = -3: it is periodic in (0, 1)
    y = away_from_integers(500)
    assert torch.allclose(round_up_bit(y + 1, 10.0), round_up_bit(y, 10.0))
    assert 0 < round_up_bit(x, 10.0).min() and round_up_bit(x, 10.0).max() < 1


@pytest.mark.parametrize("k", [1.0, 10.0, 100.0])
def test_continuity_catches_the_jump_variant(k):
    n = torch.arange(-3, 4, dtype=D)
    eps = 1e-9

    def jump(f):
        return (f(n + eps) - f(n - eps)).abs().max().item()

    assert jump(lambda v: smooth_round(v, k)) < 1e-6
    assert jump(lambda v: smooth_floor(v, k)) < 1e-6
    assert jump(lambda v: jump_variant(v, k)) > 0.49
    # Un-normalised R_k jumps by 2 sigmoid(-k/2): 0.76 at k = 1, why softfloor normalises.
    assert jump(lambda v: smooth_round(v, k, normalize=False)) == \
        pytest.approx(2 / (1 + math.exp(k / 2)), rel=1e-5, abs=1e-12)


# -- the corrected staircase -------------------------------------------------------------------

@pytest.mark.parametrize("k", [0.5, 1.0, 4.0, 20.0])
def test_gradcheck_away_from_steps(k):
    v = away_from_integers(64).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: SmoothRoundFn.apply(t, k), (v,))


@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("k", [1.0, 7.0, 30.0])
def test_closed_form_derivative(k, normalize):
    v = away_from_integers(500, seed=1, margin=0.0).requires_grad_()
    (g,) = torch.autograd.grad(smooth_round(v, k, normalize).sum(), v)  # autograd of the formula
    s = torch.sigmoid(k * (v - torch.floor(v) - 0.5))
    want = k * s * (1 - s) / (math.tanh(k / 4) if normalize else 1.0)
    assert torch.allclose(g, want.detach(), rtol=1e-10, atol=1e-12)
    assert torch.allclose(smooth_round_grad(v.detach(), k, normalize), want.detach(),
                          rtol=1e-12, atol=0)


@pytest.mark.parametrize("fn", [SmoothRoundFn, HardRoundSmoothGradFn])
def test_custom_backward_is_the_closed_form(fn):
    v = away_from_integers(300, seed=2, margin=0.0).requires_grad_()
    fn.apply(v, 9.0).sum().backward()
    assert torch.allclose(v.grad, smooth_round_grad(v.detach(), 9.0), rtol=1e-12, atol=0)


@pytest.mark.parametrize("k", [2.0, 5.0, 10.0, 20.0, 50.0, 100.0])
def test_converges_to_round_half_up(k):
    x = grid()
    err = (smooth_round(x, k) - round_half_up(x)).abs()
    assert err.max() <= 0.5 + 1e-12  # never more than half a step, anywhere
    for delta in (0.05, 0.1, 0.25):
        far = ((x - torch.floor(x)) - 0.5).abs() >= delta
        bound = 1 / (1 + math.exp(k * delta)) / math.tanh(k / 4)
        assert err[far].max() <= bound + 1e-12
    far = ((x - torch.floor(x)) - 0.5).abs() >= 0.1
    if k >= 50:
        assert err[far].max() < 1e-2
    # The smooth floor converges to floor away from the integers.
    f = x - torch.floor(x)
    ff = (f >= 0.1) & (f <= 0.9)
    bound = 1 / (1 + math.exp(k * 0.1)) / math.tanh(k / 4)
    assert (smooth_floor(x, k) - torch.floor(x))[ff].abs().max() <= bound + 1e-12


def test_error_shrinks_as_k_grows():
    x = grid()
    far = ((x - torch.floor(x)) - 0.5).abs() >= 0.1
    errs = [(smooth_round(x, k) - round_half_up(x))[far].abs().max().item()
            for k in (1, 2, 5, 10, 20, 50)]
    assert errs == sorted(errs, reverse=True) and errs[-1] < 1e-2


def test_fixed_points_and_small_k_limit():
    n = torch.arange(-5, 6, dtype=D)
    for k in (0.5, 3.0, 40.0):
        assert torch.allclose(smooth_round(n, k), n, atol=1e-12)
        assert torch.allclose(smooth_round(n + 0.5, k), n + 0.5, atol=1e-12)
    x = grid()
    assert (smooth_round(x, 1e-3) - x).abs().max() < 1e-4  # k -> 0: the identity


def test_mean_gradient_over_a_period_is_one():
    x = torch.linspace(0, 1, 200001, dtype=D)
    for k in (1.0, 10.0, 50.0):
        assert torch.trapezoid(smooth_round_grad(x, k), x).item() == pytest.approx(1, abs=1e-9)


# -- hard functions: round half up, ties and negatives -----------------------------------------

TIES = torch.tensor([-3.5, -2.5, -1.5, -0.5, 0.5, 1.5, 2.5], dtype=D)


@pytest.mark.parametrize("sur", [STESurrogate(), SigmoidSurrogate(k=5.0),
                                 SigmoidSurrogate(k=5.0, hard_grad="ste")])
def test_hard_forward_is_half_up(sur):
    got = sur.forward(TIES, hard=True)
    assert got.tolist() == [-3, -2, -1, 0, 1, 2, 3]
    assert not torch.equal(got, torch.round(TIES))  # torch.round is half-even
    x = grid(-4, 4, 8001)
    assert torch.equal(sur.forward(x, hard=True), torch.floor(x + 0.5))
    sur.hard = True
    assert torch.equal(sur(x), torch.floor(x + 0.5))


@settings(max_examples=300, deadline=None)
@given(st.integers(-10**6, 10**6), st.integers(0, 12))
def test_hard_round_matches_arith_round_shift(a, s):
    v = torch.tensor([a / 2.0 ** s], dtype=D)
    assert int(round_half_up(v).item()) == arith.round_shift(a, s, "half_up")
    assert int(STESurrogate()(v).item()) == arith.round_shift(a, s, "half_up")


def test_gradients_of_hard_modes():
    v = away_from_integers(100, seed=3, margin=0.0).requires_grad_()
    STESurrogate()(v).sum().backward()
    assert torch.equal(v.grad, torch.ones_like(v))
    v.grad = None
    SigmoidSurrogate(k=8.0, hard=True)(v).sum().backward()
    assert torch.allclose(v.grad, smooth_round_grad(v.detach(), 8.0))
    v.grad = None
    SigmoidSurrogate(k=8.0, hard=True, hard_grad="ste")(v).sum().backward()
    assert torch.equal(v.grad, torch.ones_like(v))


def test_soft_mode_is_the_staircase():
    x = grid()
    assert torch.equal(SigmoidSurrogate(k=6.0)(x), SmoothRoundFn.apply(x, 6.0))
    assert torch.allclose(SigmoidSurrogate(k=6.0)(x), smooth_round(x, 6.0), atol=1e-12)
    assert torch.equal(STESurrogate(k=6.0)(x), torch.floor(x + 0.5))  # STE has no soft form


# -- registry and schedule ---------------------------------------------------------------------

def test_registry():
    assert set(SURROGATES) >= {"ste", "sigmoid"}
    assert isinstance(make_surrogate("sigmoid", k=3.0), SigmoidSurrogate)
    with pytest.raises(ValueError, match="unknown surrogate 'tanh'; choose one of ste, ste_plain, sigmoid, dsq"):
        make_surrogate("tanh")
    with pytest.raises(ValueError, match="hard_grad"):
        SigmoidSurrogate(hard_grad="zero")
    with pytest.raises(ValueError, match="sharpness k"):
        SigmoidSurrogate(k=0.0)(torch.zeros(1, dtype=D))
    assert "k=3.0" in repr(make_surrogate("sigmoid", k=3.0))


def test_anneal_schedule():
    sch = AnnealSchedule(k_start=1.0, k_end=20.0, hard_fraction=0.25)
    steps = [sch.at(e, 60) for e in range(60)]
    ks = [k for k, _ in steps]
    assert ks[0] == 1.0 and ks[44] == pytest.approx(20.0) and ks == sorted(ks)
    assert [h for _, h in steps] == [False] * 45 + [True] * 15
    assert sch.at(0, 2) == (1.0, False) and sch.at(1, 2) == (20.0, True)
    assert AnnealSchedule(hard_fraction=0.01).at(9, 10)[1]  # at least one hard epoch
    assert not AnnealSchedule(hard_fraction=0.0).at(9, 10)[1]
    with pytest.raises(ValueError, match="hard_fraction"):
        AnnealSchedule(hard_fraction=1.5)


# -- every registered surrogate ----------------------------------------------------------------

ALL = sorted(SURROGATES)


@pytest.mark.parametrize("name", ALL)
def test_every_hard_forward_is_half_up(name):
    sur = make_surrogate(name, k=6.0, hard=True)
    assert sur(TIES).tolist() == [-3, -2, -1, 0, 1, 2, 3]
    x = grid(-4, 4, 8001)
    assert torch.equal(sur(x), torch.floor(x + 0.5))
    # Clip edges: ties at the ends of [0, 3] round up, then saturate.
    edge = torch.tensor([-0.51, -0.5, -0.49, 2.49, 2.5, 3.49, 3.5, 9.0], dtype=D)
    assert sur.quantize(edge, 0, 3).tolist() == [0, 0, 0, 2, 3, 3, 3, 3]


@pytest.mark.parametrize("name", ALL)
def test_every_surrogate_has_finite_gradients_soft_and_hard(name):
    v = grid(-3, 3, 6001).requires_grad_()  # includes integers and half-integers
    for hard in (False, True):
        sur = make_surrogate(name, k=8.0, hard=hard)
        (g,) = torch.autograd.grad(sur.quantize(v, -2, 2).sum(), v)
        assert torch.isfinite(g).all() and (g >= 0).all()
        assert g[(v.detach() > -1.4) & (v.detach() < 1.4)].max() > 0
        assert "k=" in str(sur) and f"hard={hard}" in str(sur)


def test_plain_and_clipped_ste():
    v = torch.tensor([-3.0, -0.2, 1.2, 2.7, 9.0], dtype=D, requires_grad=True)
    make_surrogate("ste").quantize(v, 0, 3).sum().backward()
    assert v.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]  # clipped outside the code range
    v.grad = None
    out = make_surrogate("ste_plain").quantize(v, 0, 3)
    out.sum().backward()
    assert out.tolist() == [0, 0, 1, 3, 3] and v.grad.tolist() == [1.0] * 5


def test_default_schedules_are_declared():
    from softfloor.surrogates import default_k
    for name in ALL:
        k0, k1 = default_k(name)
        assert 0 < k0 < k1
        AnnealSchedule(k0, k1)
    with pytest.raises(ValueError, match="unknown surrogate"):
        default_k("nope")


# -- DSQ ---------------------------------------------------------------------------------------

from softfloor.surrogates import (DSQ_THETA_RANGE, DSQRoundFn, DSQSurrogate,  # noqa: E402
                                  FourierRoundFn, dsq_alpha_from_k, dsq_k_from_alpha,
                                  dsq_k_from_theta, dsq_round, dsq_round_grad, fourier_floor,
                                  fourier_floor_grad, fourier_r, fourier_round,
                                  fourier_round_grad)


@pytest.mark.parametrize("k", [0.3, 2.0, 10.0])
def test_dsq_gradcheck_v_and_k(k):
    v = away_from_integers(40, seed=4).requires_grad_()
    kt = torch.tensor(k, dtype=D, requires_grad=True)
    assert torch.autograd.gradcheck(DSQRoundFn.apply, (v, kt))


@pytest.mark.parametrize("k", [0.5, 3.0, 25.0])
def test_dsq_closed_form_and_sigmoid_identity(k):
    v = away_from_integers(400, seed=5, margin=0.0).requires_grad_()
    (g,) = torch.autograd.grad(dsq_round(v, k).sum(), v)
    assert torch.allclose(g, dsq_round_grad(v.detach(), k), rtol=1e-10, atol=1e-12)
    x = grid()
    # DSQ with sharpness k is the normalised sigmoid staircase with sharpness 2k.
    assert torch.allclose(dsq_round(x, k), smooth_round(x, 2 * k), atol=1e-12)
    assert dsq_k_from_alpha(dsq_alpha_from_k(k)) == pytest.approx(k)


def test_dsq_continuity_and_convergence():
    n = torch.arange(-3, 4, dtype=D)
    errs = []
    for k in (1.0, 5.0, 20.0, 60.0):
        assert (dsq_round(n + 1e-9, k) - dsq_round(n - 1e-9, k)).abs().max() < 1e-6
        x = grid()
        far = ((x - torch.floor(x)) - 0.5).abs() >= 0.1
        errs.append((dsq_round(x, k) - round_half_up(x))[far].abs().max().item())
    assert errs == sorted(errs, reverse=True) and errs[-1] < 1e-4


def test_dsq_alpha_stays_inside_after_large_steps():
    theta = torch.nn.Parameter(torch.tensor(0.0, dtype=D))
    sur = DSQSurrogate(theta=theta)
    opt = torch.optim.SGD([theta], lr=1e6)
    x = grid(-2, 2, 4001)
    for sign in (1.0, -1.0, 1.0):
        loss = sign * sur(x).pow(2).sum() + sign * 1e3 * theta
        opt.zero_grad()
        loss.backward()
        assert torch.isfinite(theta.grad)
        opt.step()
        k = dsq_k_from_theta(theta)
        alpha = torch.sigmoid(theta.clamp(*DSQ_THETA_RANGE))
        assert torch.isfinite(k) and k > 0 and 0 < alpha < 1
        assert torch.isfinite(sur(x)).all()
    theta.data.fill_(-1e300)
    assert math.isfinite(sur.sharpness()) and sur.sharpness() > 0


def test_dsq_learns_its_sharpness_in_the_quantizer():
    from softfloor.quant import QuantReLU
    act = QuantReLU(2, "dsq").double()
    assert torch.sigmoid(act.sharpness_logit).item() == pytest.approx(0.2)
    assert act.surrogate.theta is act.sharpness_logit
    x = torch.linspace(-1, 4, 101, dtype=D)
    act(x).sum().backward()
    assert act.sharpness_logit.grad is not None and act.sharpness_logit.grad != 0


# -- Fourier / arctan --------------------------------------------------------------------------

@pytest.mark.parametrize("r", [0.1, 0.6, 0.95])
def test_fourier_gradcheck_and_poisson_kernel(r):
    v = away_from_integers(60, seed=6).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: FourierRoundFn.apply(t, r), (v,))
    w = grid(-3, 3, 2001).requires_grad_()
    (gf,) = torch.autograd.grad(fourier_floor(w, r).sum(), w)
    assert torch.allclose(gf, fourier_floor_grad(w.detach(), r), rtol=1e-9, atol=1e-12)
    (gr,) = torch.autograd.grad(fourier_round(w, r).sum(), w)
    assert torch.allclose(gr, fourier_round_grad(w.detach(), r), rtol=1e-9, atol=1e-12)
    # The closed form of the round, and round = floor(v + 1/2).
    a = 2 * math.pi * w.detach()
    want = w.detach() - torch.atan(r * torch.sin(a) / (1 + r * torch.cos(a))) / math.pi
    assert torch.allclose(fourier_round(w.detach(), r), want, atol=1e-12)
    assert torch.allclose(fourier_floor(w.detach() + 0.5, r), want, atol=1e-12)
    x = torch.linspace(0, 1, 200001, dtype=D)
    assert torch.trapezoid(fourier_round_grad(x, r), x).item() == pytest.approx(1, abs=1e-6)


def test_fourier_limits_and_continuity():
    x = grid()
    assert torch.allclose(fourier_round(x, 0.0), x, atol=0) and fourier_r(1.0) == 0.0
    assert fourier_r(19.0) == pytest.approx(0.9)
    far_tie = ((x - torch.floor(x)) - 0.5).abs() >= 0.05
    far_int = ((x - torch.floor(x)) - 0.5).abs() <= 0.45
    prev_r = prev_f = math.inf
    for r in (0.5, 0.9, 0.99, 0.999):
        er = (fourier_round(x, r) - round_half_up(x))[far_tie].abs().max().item()
        ef = (fourier_floor(x, r) - torch.floor(x))[far_int].abs().max().item()
        assert er < prev_r and ef < prev_f
        prev_r, prev_f = er, ef
        n = torch.arange(-3, 4, dtype=D)
        for f in (lambda v: fourier_round(v, r), lambda v: fourier_floor(v, r)):
            assert (f(n + 0.5 + 1e-9) - f(n + 0.5 - 1e-9)).abs().max() < 1e-5
            assert (f(n + 1e-9) - f(n - 1e-9)).abs().max() < 1e-5
    assert prev_r < 0.01 and prev_f < 0.01
    with pytest.raises(ValueError, match="damping r"):
        fourier_round(x, 1.0)


# -- LSQ and PACT scale gradients --------------------------------------------------------------

def test_lsq_scales_the_scale_gradient():
    from softfloor.quant import QuantReLU, lsq_grad_factor
    x = torch.linspace(-1, 6, 64, dtype=D).reshape(4, 16)
    grads = {}
    for name in ("ste", "lsq"):
        act = QuantReLU(3, name).double()
        act.log2_scale.data.fill_(-1.0)
        act(x).pow(2).sum().backward()
        grads[name] = act.log2_scale.grad.item()
    assert grads["ste"] != 0
    assert grads["lsq"] == pytest.approx(grads["ste"] * lsq_grad_factor(16, 7), rel=1e-12)


def test_pact_clip_gradient_comes_from_clipped_inputs_only():
    from softfloor.quant import QuantReLU
    act = QuantReLU(2, "pact").double()
    act.log2_scale.data.fill_(0.0)  # alpha = 3
    inside = torch.tensor([[0.2, 1.4, 2.6]], dtype=D, requires_grad=True)
    act(inside).sum().backward()
    assert act.log2_scale.grad.item() == 0.0 and inside.grad.tolist() == [[1.0, 1.0, 1.0]]
    above = torch.tensor([[5.0, 7.0, 1.0]], dtype=D, requires_grad=True)
    act.log2_scale.grad = None
    y = act(above)
    assert y.tolist() == [[3.0, 3.0, 1.0]]
    y.sum().backward()
    # d y / d alpha = 1 per clipped input; alpha = 3 * 2**e, d alpha / d e = 3 ln 2.
    assert act.log2_scale.grad.item() == pytest.approx(2 * 3 * math.log(2))
    assert above.grad.tolist() == [[0.0, 0.0, 1.0]]

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
    with pytest.raises(ValueError, match="unknown surrogate 'tanh'; choose one of ste, sigmoid"):
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

"""softfloor.input_thresholds: learned per-pixel 1-bit input thresholds."""
import math

import numpy as np
import pytest
import torch

from softfloor import input_thresholds as it
from softfloor.data import load_digits_split, scale_thresholds, threshold_scales
from softfloor.train import (TrainConfig, digits_split, hard_codes, load_checkpoint,
                             result_split, save_checkpoint, train_qat)
from tests.sw.exactness import splits, trained_and_exported  # noqa: F401


def test_forward_is_the_exact_bit_and_backward_the_ramp():
    gen = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 17, (40, 64), generator=gen).to(torch.float64)
    t = torch.rand(64, generator=gen, dtype=torch.float64) * 15 + 0.5
    t[:4] = torch.tensor([3.0, 7.0, 0.5, 15.5], dtype=torch.float64)  # integers and the edges
    step = 0.5
    y = it.threshold_codes(pixels, t, step)
    assert torch.equal(y, (pixels > t).to(torch.float64) * step)
    assert torch.equal(it.threshold_codes(pixels, t, 1.0), (pixels > t).to(torch.float64))
    g = torch.randn(40, 64, generator=gen, dtype=torch.float64)
    got = it.threshold_grad(pixels, t, g, step)
    # the STE of clamp((p - t) / WIDTH + 1/2, 0, 1), written out
    ramp = (pixels - t) / it.WIDTH + 0.5
    inside = (ramp >= 0) & (ramp <= 1)
    assert torch.allclose(got, -(g * inside).sum(0) * step / it.WIDTH, rtol=1e-12, atol=1e-12)
    # away from the ramp's corners it is autograd's gradient of the ramp itself
    t2 = t.clone().requires_grad_()
    soft = ((pixels - t2) / it.WIDTH + 0.5).clamp(0, 1) * step
    (soft * g).sum().backward()
    corner = ((ramp == 0) | (ramp == 1)).any(0)
    assert torch.allclose(got[~corner], t2.grad[~corner], rtol=1e-12, atol=1e-12)


def test_adam_step_is_torch_adam():
    gen = torch.Generator().manual_seed(1)
    p = torch.randn(64, generator=gen, dtype=torch.float64)
    ref = p.clone().requires_grad_()
    opt = torch.optim.Adam([ref], lr=0.2, betas=it.BETAS, eps=it.EPS, foreach=False)
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    for step in range(1, 30):
        g = torch.randn(64, generator=gen, dtype=torch.float64) * 10 ** (step % 5 - 2)
        lr = 0.2 * (1 + math.cos(math.pi * step / 30)) / 2
        for group in opt.param_groups:
            group["lr"] = lr
        ref.grad = g.clone()
        opt.step()
        it.adam_step(p, g, m, v, step, lr)
        assert torch.equal(p, ref.detach()), step


def test_integer_thresholds_make_the_same_bits():
    ts = np.concatenate([np.arange(0.5, 15.51, 0.25), [1.0, 2.0, 15.0, 0.5000001, 15.4999]])
    pixels = np.arange(17)
    for t in ts:
        T = it.integer_thresholds([t])[0]
        assert 1 <= T <= 16
        assert np.array_equal(pixels > t, pixels >= T), t


def test_start_codes_update_and_clamp():
    split = load_digits_split(1, "per_pixel")
    lt = it.LearnedThresholds(split, 1.0)
    idx = torch.arange(len(split.y_train))
    assert torch.equal(lt.batch(idx), torch.as_tensor(split.c_train, dtype=torch.float64))
    assert lt.moved() == 0 and lt.input_spec() == split.input_spec
    assert np.array_equal(lt.thresholds(), scale_thresholds(split.input_spec.scale))
    # a loss that wants every input on pulls the thresholds down (those with a pixel of the
    # batch within one level), clamped at T_LO (T = 1)
    start = lt.t.clone()
    for _ in range(100):  # Adam: about lr per step for a gradient of constant sign
        lt.batch(idx[:64])
        lt.update(torch.full((64, 64), -1.0, dtype=torch.float64), 1.0)
    assert lt.steps == 100 and torch.all(lt.t <= start) and torch.all(lt.t >= it.T_LO)
    assert int((lt.t == it.T_LO).sum()) > 32 and lt.moved() > 0
    assert "moved from the start" in repr(lt)
    lt.batch(idx[:64])
    with pytest.raises(RuntimeError, match="no gradient for its input"):
        lt.update(None, 1.0)


def test_needs_a_per_pixel_split():
    with pytest.raises(ValueError, match="per-pixel split.*load_digits_split\\(1, 'learned'\\)"):
        it.LearnedThresholds(load_digits_split(1), 1.0)


def test_learned_split_is_the_per_pixel_start():
    a, b = load_digits_split(1, "learned"), load_digits_split(1, "per_pixel")
    assert a.input_spec == b.input_spec and np.array_equal(a.c_train, b.c_train)
    assert scale_thresholds(threshold_scales([1, 6, 16])).tolist() == [1, 6, 16]
    with pytest.raises(ValueError, match="t/8"):
        scale_thresholds([0.3])


def test_training_learns_thresholds_and_measures_on_their_codes(tmp_path):
    cfg = TrainConfig(weight_bits=1, act_bits=1, input_bits=1, surrogate="ste",
                      input_quant="learned", epochs=4)
    split = digits_split(cfg)
    res = train_qat(cfg, split)
    learned = scale_thresholds(res.input_spec.scale)
    start = scale_thresholds(split.input_spec.scale)
    assert res.history[-1]["thresholds_moved"] == int(np.sum(learned != start)) > 0
    trained = result_split(res, split)
    # every code of every sample is pixel >= the learned threshold
    for x, c in ((split.x_train, trained.c_train), (split.x_test, trained.c_test)):
        assert np.array_equal(c, (np.rint(x * 16) >= learned).astype(np.int64))
    acc = float((hard_codes(res.model, trained.c_test).argmax(1) == split.y_test).mean())
    assert acc == res.test_accuracy and res.accuracy["bit_exact"]
    # the checkpoint carries the learned quantizer
    back = load_checkpoint(save_checkpoint(res, tmp_path / "m.pt"))
    assert back.input_spec.to_dict() == res.input_spec.to_dict() != split.input_spec.to_dict()


def test_wider_inputs_refuse_learned_thresholds():
    with pytest.raises(ValueError, match="'learned'.*needs 1-bit inputs"):
        TrainConfig(weight_bits=1, act_bits=1, input_bits=4, input_quant="learned")


def test_cnn_learns_thresholds_and_exports_them_exactly(splits, tmp_path):
    """The thresholds train through any model's input gradient: the CNN (composed autograd)."""
    cfg = TrainConfig(arch="cnn", weight_bits=2, act_bits=2, input_bits=1, surrogate="ste",
                      input_quant="learned", epochs=2)
    res, split, model = trained_and_exported(cfg, splits, tmp_path)
    assert res.history[-1]["thresholds_moved"] > 0
    assert model.input.to_dict()["scale"] == res.input_spec.to_dict()["scale"]
    assert np.array_equal(split.c_test, model.input.quantize(split.x_test))

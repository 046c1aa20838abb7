"""Train -> export -> save/load -> golden: integer codes equal the torch hard forward, always."""
import math

import numpy as np
import pytest
import torch

from softfloor import golden, intmodel
from softfloor.data import load_digits_split
from softfloor.nn.exporter import export, export_result
from softfloor.intmodel import ChannelRequant, Dense, ModelFormatError, Requant
from softfloor.models import QuantMLP, worst_case_acc_bits
from softfloor.quant import PACT_DECAY
from softfloor.train import (TrainConfig, float_hard_codes, hard_codes, load_checkpoint,
                             result_split, save_checkpoint, train_float, train_qat)
from tests.sw.exactness import assert_bit_exact, splits, trained_and_exported  # noqa: F401

SHORT = 6  # epochs of the quick runs: enough to move every scale, fast


@pytest.mark.parametrize("wb, ab, ib, surrogate, bn", [
    (4, 4, None, "sigmoid", None), (8, 8, None, "sigmoid", None), (2, 2, None, "ste", None),
    (1, 1, None, "sigmoid", False), (3, 5, 8, "ste", None),
    # every other surrogate, and BatchNorm folded both ways (threshold at 1-bit activations)
    (1, 1, None, "dsq", None), (2, 2, 2, "fourier", True), (4, 4, 4, "lsq", True),
    (1, 2, 2, "pact", None), (8, 1, 4, "dsq_hard", True), (2, 8, 1, "ste_plain", True),
])
def test_export_is_bit_exact(wb, ab, ib, surrogate, bn, splits, tmp_path):
    cfg = TrainConfig(weight_bits=wb, act_bits=ab, input_bits=ib, surrogate=surrogate,
                      epochs=SHORT, batchnorm=bn)
    res = train_qat(cfg, splits(cfg))
    assert res.accuracy["bit_exact"] is True
    # the codes of the input quantizer it was trained with (learned thresholds at w1a1)
    split = result_split(res, splits(cfg))
    model = export_result(res, name=f"w{wb}a{ab}")
    if cfg.input_quantizer == "learned":
        with pytest.raises(ValueError, match="not the input quantizer the model was trained"):
            export_result(res, splits(cfg).input_spec)
    path = intmodel.save(model, tmp_path / "m.intmodel.json")
    loaded = intmodel.load(path)
    assert loaded.to_dict() == model.to_dict()
    assert_bit_exact(res.model, split, loaded)
    acc = float(np.mean(golden.predict(loaded, split.c_test) == split.y_test))
    assert acc == res.accuracy["test"] == loaded.meta["accuracy"]["test"]
    assert loaded.meta["train_config"]["weight_bits"] == wb
    assert loaded.output.scale == 2.0 ** (res.model.layer_exps()[-1]
                                          + res.model.linears[-1].wq.exp)
    # Structure: dense, requant, dense, requant, dense; ReLU saturation at act_bits.
    ops = [type(layer) for layer in loaded.layers]
    assert ops == [Dense, Requant, Dense, Requant, Dense]
    for layer in loaded.layers:
        if isinstance(layer, Requant):
            assert (layer.rounding, layer.lo, layer.hi, layer.signed) == \
                ("half_up", 0, 2 ** ab - 1, False)
            if cfg.use_batchnorm and ab == 1:  # the BatchNorm threshold lives in the bias
                assert (layer.shift, layer.multiplier) == (0, 1)
        else:
            assert layer.weight_bits == wb
            lo, hi = intmodel.arith.code_range(layer.weight_bits, True)
            assert layer.weight.min() >= max(lo, -1 if wb <= 2 else lo)
            assert layer.weight.max() <= (1 if wb <= 2 else hi)


def test_widths_are_minimal(splits):
    split = splits(4)
    res = train_qat(TrainConfig(epochs=2), split)
    model = export(res.model, split.input_spec)
    for i, layer in enumerate(model.layers):
        if not isinstance(layer, Dense):
            continue
        tight = [layer_ if j != i else Dense(layer.name, layer.weight, layer.bias,
                                             layer.weight_bits, layer.bias_bits,
                                             layer.acc_bits - 1)
                 for j, layer_ in enumerate(model.layers)]
        with pytest.raises(ModelFormatError, match="can overflow"):
            intmodel.IntModel(model.input, tight, model.output)
        b = layer.bias
        lo, hi = intmodel.arith.code_range(layer.bias_bits - 1, True) \
            if layer.bias_bits > 1 else (0, 0)
        assert b.min() < lo or b.max() > hi or layer.bias_bits == 1


def test_negative_shift_becomes_a_multiplier(splits):
    split = splits(4)
    res = train_qat(TrainConfig(epochs=2), split)
    m = res.model
    lin, act = m.linears[1], m.acts[1]
    act.log2_scale.data.fill_(float(m.acts[0].exp + lin.wq.exp - 2))  # 4x finer than the acc
    model = export(m, split.input_spec)
    rq = model.layers[3]
    assert (rq.shift, rq.multiplier) == (0, 4)
    assert_bit_exact(res.model, split, model)


def test_deterministic(splits):
    split = splits(4)
    a = train_qat(TrainConfig(epochs=3, seed=5), split)
    b = train_qat(TrainConfig(epochs=3, seed=5), split)
    assert a.history == b.history
    assert np.array_equal(hard_codes(a.model, split.c_test), hard_codes(b.model, split.c_test))


def test_progress_and_checkpoint(splits, tmp_path):
    split = splits(4)
    seen = []
    res = train_qat(TrainConfig(epochs=4), split, progress=lambda e, n, info: seen.append(
        (e, n, info["hard"])))
    assert seen == [(1, 4, False), (2, 4, False), (3, 4, False), (4, 4, True)]
    back = load_checkpoint(save_checkpoint(res, tmp_path / "model.pt"))
    assert back.config == res.config and back.accuracy == res.accuracy
    assert np.array_equal(hard_codes(back.model, split.c_test), hard_codes(res.model, split.c_test))
    fl = train_float(TrainConfig(epochs=3), split)
    assert 0 < fl.test_accuracy <= 1
    assert load_checkpoint(save_checkpoint(fl, tmp_path / "f.pt")).accuracy == fl.accuracy


def test_errors(splits):
    with pytest.raises(ValueError, match="weight_bits must be an integer from 1 to 8"):
        TrainConfig(weight_bits=9)
    with pytest.raises(ValueError, match="input_bits must be an integer from 1 to 8"):
        TrainConfig(input_bits=0)
    with pytest.raises(ValueError, match="unknown surrogate"):
        TrainConfig(surrogate="relu6")
    with pytest.raises(ValueError, match=r"load_digits_split\(8, 'global'\)"):
        train_qat(TrainConfig(act_bits=8, epochs=1), splits(4))
    # the learned quantizer of w1a1 is part of the config: the global 1-bit split is refused
    with pytest.raises(ValueError, match=r"\(global quantizer\).*learned.*digits_split"):
        train_qat(TrainConfig(weight_bits=1, act_bits=1, epochs=1), splits(1))
    with pytest.raises(ValueError, match="input_quant 'per_pixel'.*needs 1-bit inputs"):
        TrainConfig(input_quant="per_pixel")
    with pytest.raises(ValueError, match="input_quant must be one of global, per_pixel, learned"):
        TrainConfig(input_quant="otsu")
    res = train_qat(TrainConfig(epochs=1), splits(4))
    with pytest.raises(ValueError, match="does not match the model's input"):
        export(res.model, splits(8).input_spec)


@pytest.mark.slow
def test_default_w4a4_reaches_95_percent(splits):
    split = splits(4)
    res = train_qat(TrainConfig(), split)
    assert res.seconds < 60
    assert res.accuracy["test"] >= 0.95, res
    model = export_result(res, split.input_spec)
    assert_bit_exact(res.model, split, model)
    assert float(np.mean(golden.predict(model, split.c_test) == split.y_test)) == \
        res.accuracy["test"]


def _bn_model(ab, seed=0):
    import torch
    from softfloor.models import QuantMLP
    torch.manual_seed(seed)
    return QuantMLP((64, 12, 8, 10), weight_bits=1, act_bits=ab, input_bits=4,
                    surrogate="ste", batchnorm=True)


def test_batchnorm_modes_and_freezing(splits):
    import torch
    split = splits(4)
    x = torch.as_tensor(split.c_train[:200], dtype=torch.float64) / 16
    for ab, mode in ((1, "threshold"), (2, "fold")):
        m = _bn_model(ab)
        assert [lin.bn_mode for lin in m.linears] == [mode, mode, None]
        m.calibrate(x)
        m.train()
        before = m.linears[0].bn.running_mean.clone()
        m(x[:50] + 0.25)
        assert not torch.equal(m.linears[0].bn.running_mean, before)  # batch statistics
        m.set_surrogate(5.0, True)  # the hard phase freezes them
        frozen = m.linears[0].bn.running_mean.clone()
        m(x[:50] + 0.5)
        assert torch.equal(m.linears[0].bn.running_mean, frozen)
        assert np.array_equal(float_hard_codes(m, split.c_test), hard_codes(m, split.c_test))


def test_threshold_extremes_are_exported_exactly(splits):
    """Negative, zero and huge gamma: flipped rows, always/never-firing channels stay exact."""
    import torch
    split = splits(4)
    m = _bn_model(1, seed=3)
    m.calibrate(torch.as_tensor(split.c_train, dtype=torch.float64) / 16)
    bn = m.linears[0].bn
    with torch.no_grad():
        bn.gamma[:4] = -bn.gamma[:4]          # acc <= t: row negated
        bn.gamma[4] = 0.0; bn.beta[4] = 100.0  # always fires
        bn.gamma[5] = 0.0; bn.beta[5] = -1.0   # never fires
        bn.gamma[6] = 1e-30                    # threshold far outside the reachable range
    m.set_surrogate(5.0, True)
    model = export(m, split.input_spec)
    want = hard_codes(m, split.c_test, intermediates=True)[1][1]
    assert np.all(want[:, 4] == 1) and np.all(want[:, 5] == 0)
    assert model.layers[0].bias_bits <= 16  # the clamped thresholds keep the bias small
    got = golden.run(model, split.c_test, intermediates=True)[1]
    assert np.array_equal(got[1], want)
    assert np.array_equal(golden.run(model, split.c_test), float_hard_codes(m, split.c_test))
    w_exported, w_codes = model.layers[0].weight, m.linears[0].weight_codes().numpy()
    assert np.array_equal(w_exported[:4], -w_codes[:4])
    assert np.array_equal(w_exported[4:], w_codes[4:])


@pytest.mark.parametrize("name", ["ste", "sigmoid", "dsq", "fourier"])
def test_schedule_defaults_come_from_the_surrogate(name):
    from softfloor.surrogates import default_k
    from softfloor.train import config_dict
    cfg = TrainConfig(surrogate=name)
    assert (cfg.schedule().k_start, cfg.schedule().k_end) == default_k(name)
    assert config_dict(cfg)["k_end"] == default_k(name)[1]
    assert TrainConfig(surrogate=name, k_end=7.0).schedule().k_end == 7.0
    assert TrainConfig(weight_bits=1).use_batchnorm and TrainConfig().use_batchnorm
    assert not TrainConfig(weight_bits=1, act_bits=1).use_batchnorm
    assert not TrainConfig(weight_bits=4, act_bits=1).use_batchnorm
    assert not TrainConfig(act_bits=1, batchnorm=False).use_batchnorm
    assert TrainConfig().learning_rate == 5e-3 and TrainConfig(act_bits=1).learning_rate == 1e-2
    assert TrainConfig(weight_bits=2, act_bits=2).learning_rate == 2e-2
    assert TrainConfig(weight_bits=1, act_bits=2).learning_rate == 1e-2
    assert TrainConfig(weight_bits=2, act_bits=4).use_batchnorm
    assert TrainConfig(weight_bits=3, act_bits=3).use_batchnorm
    assert not TrainConfig(arch="cnn").use_batchnorm
    assert TrainConfig(lr=1e-3, weight_bits=1).learning_rate == 1e-3
    assert config_dict(TrainConfig(weight_bits=1))["lr"] == 1e-2


@pytest.mark.parametrize("kw, surrogate, bn, schedule, grad, noise", [
    ({}, "sigmoid", True, "cosine", "box", 0.0),
    ({"weight_bits": 8, "act_bits": 8}, "sigmoid", True, "cosine", "box", 0.0),
    ({"weight_bits": 3, "act_bits": 3}, "sigmoid", True, "cosine", "box", 0.0),
    ({"weight_bits": 2, "act_bits": 2}, "ste", True, "cosine", "box", 0.0),
    ({"weight_bits": 4, "act_bits": 2}, "ste", True, "cosine", "box", 0.0),
    ({"weight_bits": 1, "act_bits": 2}, "ste", True, "cosine", "box", 0.0),
    ({"weight_bits": 1, "act_bits": 1}, "ste", False, "flat_cosine", "triangle", 0.05),
    ({"weight_bits": 1, "act_bits": 1, "input_bits": 4}, "ste", False, "cosine", "box", 0.3),
    ({"weight_bits": 4, "act_bits": 1}, "ste", False, "cosine", "box", 0.05),
    ({"arch": "cnn"}, "sigmoid", False, "cosine", "box", 0.0),
    ({"arch": "cnn", "weight_bits": 2, "act_bits": 2}, "ste", False, "cosine", "box", 0.0),
    ({"weight_bits": 1, "act_bits": 1, "surrogate": "sigmoid"}, "sigmoid", False, "cosine",
     "box", 0.05),
])
def test_defaults_resolve_per_configuration(kw, surrogate, bn, schedule, grad, noise):
    """Every unset option takes its configuration's default (``DEFAULT_RULES``), recorded
    resolved in ``config_dict`` with the list of the options that were defaulted; a set option
    wins and is not listed."""
    from softfloor.train import DEFAULT_RULES, config_dict
    cfg = TrainConfig(**kw)
    d = config_dict(cfg)
    assert (cfg.surrogate, d["batchnorm"], d["lr_schedule"], d["binary_act_grad"],
            d["augment_noise"]) == (surrogate, bn, schedule, grad, noise)
    assert ("surrogate" in d["defaults"]) == ("surrogate" not in kw)
    assert {"batchnorm", "lr", "lr_schedule", "augment_noise"} <= set(d["defaults"])
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    again = config_dict(TrainConfig.from_dict(d))        # train.json's config reproduces the run
    assert again["defaults"] == [] and again | {"defaults": d["defaults"]} == d
    assert set(DEFAULT_RULES) >= {"surrogate", "batchnorm", "lr", "lr_schedule",
                                  "binary_act_grad", "augment_noise"}


def test_bad_batchnorm_mode():
    from softfloor.quant import QuantLinear
    with pytest.raises(ValueError, match="bn must be None or one of fold, threshold"):
        QuantLinear(4, 4, bn="layer")


@pytest.mark.parametrize("wb, ab, ib, surrogate, bn", [
    (4, 4, None, "sigmoid", None), (2, 2, 2, "ste", True), (1, 1, None, "ste", None),
    (3, 5, 8, "lsq", None),
])
def test_per_channel_export_is_bit_exact(wb, ab, ib, surrogate, bn, splits, tmp_path):
    """Per-channel weight scales: hidden layers export a per-channel requant (ChannelRequant;
    a 1-bit BatchNorm threshold stays a per-tensor clamp), the last layer keeps one scale."""
    cfg = TrainConfig(weight_bits=wb, act_bits=ab, input_bits=ib, surrogate=surrogate,
                      epochs=3, batchnorm=bn, per_channel=True)
    res = train_qat(cfg, splits(cfg))
    split = result_split(res, splits(cfg))
    lins = res.model.linears
    assert all(lin.wq.per_channel for lin in lins[:-1]) and not lins[-1].wq.per_channel
    assert res.accuracy["bit_exact"] is True
    model = export_result(res)
    loaded = intmodel.load(intmodel.save(model, tmp_path / "m.intmodel.json"))
    assert_bit_exact(res.model, split, loaded)
    assert loaded.meta["train_config"]["per_channel"] is True
    threshold = cfg.use_batchnorm and ab == 1
    kinds = [type(layer).__name__ for layer in loaded.layers]
    assert kinds == ["Dense", "Requant" if threshold else "ChannelRequant"] * 2 + ["Dense"]
    assert not loaded.output.per_channel


@pytest.mark.parametrize("wb, fb, ab, surrogate, bn, pc", [
    (1, 8, 1, "ste", None, False), (2, 4, 2, "sigmoid", True, False), (1, 2, 2, "ste", True, True),
    (4, 1, 4, "lsq", None, False),
])
def test_first_layer_weight_bits_export_is_bit_exact(wb, fb, ab, surrogate, bn, pc, splits,
                                                     tmp_path):
    """``first_weight_bits``: the first layer's weights at their own width, exported as such
    (the others at ``weight_bits``), bit-exact; the accumulator bounds follow each layer's."""
    cfg = TrainConfig(weight_bits=wb, act_bits=ab, first_weight_bits=fb, surrogate=surrogate,
                      epochs=3, batchnorm=bn, per_channel=pc)
    res, split, model = trained_and_exported(cfg, splits, tmp_path)
    assert res.model.layer_weight_bits == (fb, wb, wb)
    dense = [layer for layer in model.layers if isinstance(layer, Dense)]
    assert [d.weight_bits for d in dense] == [fb, wb, wb]
    w0 = dense[0].weight
    if fb == 1:
        assert set(np.unique(w0)) <= {-1, 1}
    else:
        lo, hi = intmodel.arith.code_range(fb, True)
        assert w0.min() >= lo and w0.max() <= hi
        if fb >= 4:  # the wide first layer really uses its codes
            assert len(np.unique(w0)) > 3
    assert model.meta["train_config"]["first_weight_bits"] == fb
    # Worst-case accumulator widths come from each layer's own weight width.
    assert res.model.worst_case_acc_bits() == \
        worst_case_acc_bits((64, 64, 32), cfg.in_bits, ab, (fb, wb, wb), 16)


def test_first_weight_bits_errors():
    with pytest.raises(ValueError, match="first_weight_bits"):
        TrainConfig(weight_bits=1, act_bits=1, first_weight_bits=9)
    with pytest.raises(ValueError, match="first_weight_bits"):
        QuantMLP(weight_bits=1, first_weight_bits=0)
    with pytest.raises(ValueError, match="3 weight widths for 2 layers"):
        worst_case_acc_bits((64, 32), 1, 1, (8, 1, 1), 16)
    # unset: the first layer has weight_bits, as before
    assert QuantMLP(weight_bits=2, act_bits=2).layer_weight_bits == (2, 2, 2)
    assert TrainConfig(weight_bits=2).first_bits == 2


def test_per_channel_negative_shift_becomes_a_channel_multiplier(splits):
    split = splits(4)
    res = train_qat(TrainConfig(epochs=2, per_channel=True), split)
    m = res.model
    lin, act = m.linears[1], m.acts[1]
    with torch.no_grad():  # channel 0 4x finer than its accumulator, channel 1 4x coarser
        lin.wq.log2_scale[0] = float(act.exp - m.acts[0].exp + 2)
        lin.wq.log2_scale[1] = float(act.exp - m.acts[0].exp - 2)
    model = export(m, split.input_spec)
    rq = model.layers[3]
    assert isinstance(rq, ChannelRequant)
    assert (int(rq.shift[0]), int(rq.multiplier[0])) == (0, 4)
    assert (int(rq.shift[1]), int(rq.multiplier[1])) == (2, 1)
    assert_bit_exact(res.model, split, model)


@pytest.mark.parametrize("wb, ab, ib, surrogate, bn", [
    (4, 4, None, "sigmoid", None), (2, 2, None, "ste", None), (8, 8, 4, "dsq", None),
    (3, 2, 2, "pact", None), (1, 3, 4, "fourier", True),
])
def test_hardtanh_export_is_bit_exact(wb, ab, ib, surrogate, bn, splits, tmp_path):
    """Signed activation codes: every requant saturates to the signed range and is signed; the
    golden model, the torch integer forward and the float hard forward agree on every layer."""
    cfg = TrainConfig(weight_bits=wb, act_bits=ab, input_bits=ib, surrogate=surrogate,
                      epochs=SHORT, batchnorm=bn, activation="hardtanh")
    res, split, model = trained_and_exported(cfg, splits, tmp_path)
    assert model.meta["activation"] == "hardtanh"
    assert model.meta["train_config"]["activation"] == "hardtanh"
    lo, hi = -2 ** (ab - 1), 2 ** (ab - 1) - 1
    rqs = [x for x in model.layers if isinstance(x, Requant)]
    assert [(r.signed, r.bits, r.lo, r.hi) for r in rqs] == [(True, ab, lo, hi)] * 2
    _, per_layer = hard_codes(res.model, split.c_test, intermediates=True)
    assert per_layer[1].min() < 0 < per_layer[1].max()  # both signs are used
    back = load_checkpoint(save_checkpoint(res, tmp_path / "m.pt"))
    assert back.config.activation == "hardtanh"
    assert np.array_equal(hard_codes(back.model, split.c_test), hard_codes(res.model, split.c_test))


@pytest.mark.parametrize("wb, ab, ib, surrogate, bn, act, pc", [
    (4, 4, None, "sigmoid", None, "relu", False), (2, 2, None, "ste", None, "relu", False),
    (8, 8, 4, "dsq", None, "relu", False), (1, 1, None, "fourier", None, "relu", False),
    (3, 5, 8, "lsq", True, "relu", False), (4, 3, None, "ste_plain", None, "hardtanh", False),
    (4, 4, None, "sigmoid", None, "relu", True), (2, 2, None, "lsq", None, "hardtanh", True),
])
def test_free_scales_export_is_bit_exact(wb, ab, ib, surrogate, bn, act, pc, splits, tmp_path):
    """Free scales: the exported requants carry integer multipliers (not only powers of two);
    golden == torch integer forward == the trained hard forward, every layer, every sample."""
    cfg = TrainConfig(weight_bits=wb, act_bits=ab, input_bits=ib, surrogate=surrogate,
                      epochs=SHORT, batchnorm=bn, activation=act, scales="free", per_channel=pc)
    res, split, model = trained_and_exported(cfg, splits, tmp_path)
    m = res.model
    for codes in (split.c_test, split.c_train):  # the trained forward's codes, layer by layer
        trace = []
        with torch.no_grad():
            m.forward_free(torch.as_tensor(codes, dtype=torch.float64) * 2.0 ** m.input_exp,
                           codes=True, trace=trace)
        _, per_layer = hard_codes(m, codes, intermediates=True)
        assert len(trace) == len(per_layer)
        for t, want in zip(trace, per_layer):
            assert np.array_equal(t.numpy(), want.astype(np.float64))
    assert model.meta["scales"] == "free" and model.meta["train_config"]["scales"] == "free"
    assert "log2_scales" in model.meta and "exponents" not in model.meta
    assert model.output.scale == float(m.free_plan()[-1][0])
    rqs = [x for x in model.layers if isinstance(x, (Requant, ChannelRequant))]
    for r, (_, (shift, mult)) in zip(rqs, m.free_plan()[:-1], strict=True):
        assert isinstance(r, ChannelRequant if pc else Requant)
        assert np.array_equal(r.shift, np.asarray(shift)) and np.array_equal(r.multiplier,
                                                                             np.asarray(mult))
        assert np.any(np.asarray(r.multiplier) & (np.asarray(r.multiplier) - 1))
        assert r.signed == (act == "hardtanh")
    back = load_checkpoint(save_checkpoint(res, tmp_path / "m.pt"))
    assert back.config.scales == "free"
    assert np.array_equal(hard_codes(back.model, split.c_test), hard_codes(m, split.c_test))


@pytest.mark.parametrize("ib", [1, 4])
def test_augmented_training_is_deterministic_and_exported_exactly(ib, splits):
    from softfloor.train import config_dict
    cfg = TrainConfig(weight_bits=1, act_bits=1, input_bits=ib, surrogate="ste", epochs=3,
                      augment_shift=1, augment_noise=0.2)
    split = splits(cfg)
    a, b = train_qat(cfg, split), train_qat(cfg, split)
    assert a.history == b.history
    plain = train_qat(TrainConfig(weight_bits=1, act_bits=1, input_bits=ib, surrogate="ste",
                                  epochs=3, augment_shift=0, augment_noise=0.0), split)
    assert plain.history != a.history
    assert a.accuracy["bit_exact"] is True
    assert_bit_exact(a.model, result_split(a, split), export_result(a))
    d = config_dict(cfg)
    assert (d["augment_shift"], d["augment_noise"]) == (1, 0.2)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    fl = train_float(cfg, split)
    assert fl.history != train_float(TrainConfig(epochs=3, augment_noise=0.0), split).history


def test_pact_decay_keeps_one_bit_pact_alive(splits):
    """w1a1 PACT, 4-bit input, no BatchNorm, seed 1: without the clip levels' L2
    (``pact_decay=0``) this network dies around epoch 30 -- every hidden unit below its
    threshold ``alpha / 2`` on every sample, the loss stuck at ln 10, 10 % accuracy -- since
    PACT's clip learns only from inputs above it. With PACT's regulariser (the default) it
    trains, and every hidden layer fires."""
    cfg = TrainConfig(weight_bits=1, act_bits=1, input_bits=4, surrogate="pact",
                      batchnorm=False, seed=1)
    assert cfg.pact_decay == PACT_DECAY == 1e-2
    res = train_qat(cfg, splits(cfg))
    assert res.accuracy["test"] > 0.85 and res.accuracy["bit_exact"]
    per_layer = hard_codes(res.model, splits(cfg).c_train, intermediates=True)[1]
    acts = per_layer[1:-1:2]  # dense, activation, dense, activation, dense
    assert [a.shape[1] for a in acts] == [64, 32]
    assert all(np.any(a > 0) for a in acts)
    assert res.history[-1]["loss"] < 1.0


def test_pact_decay_errors():
    for bad in (-1e-3, math.inf, True, "0.01"):
        with pytest.raises(ValueError, match="pact_decay .* must be a finite number >= 0"):
            TrainConfig(surrogate="pact", pact_decay=bad)
    assert TrainConfig(pact_decay=0).pact_decay == 0


def test_augment_option_errors():
    with pytest.raises(ValueError, match="augment_shift must be an integer from 0 to 7"):
        TrainConfig(augment_shift=8)
    with pytest.raises(ValueError, match="augment_noise must be a probability"):
        TrainConfig(augment_noise=-0.1)


def test_adam_betas_per_configuration(splits, monkeypatch):
    """beta1 0.7 for the MLP with 1-bit activations and a 1-bit input, else 0.9; the optimiser
    of a run gets exactly the resolved betas, and train.json records beta1."""
    from softfloor import train as train_mod
    assert TrainConfig(weight_bits=1, act_bits=1).adam_betas == (0.7, 0.999)
    for cfg in (TrainConfig(), TrainConfig(weight_bits=1, act_bits=2),
                TrainConfig(weight_bits=1, act_bits=1, input_bits=4),
                TrainConfig(weight_bits=1, act_bits=1, arch="cnn")):
        assert cfg.adam_betas == (0.9, 0.999), cfg
    assert TrainConfig(beta1=0.0).adam_betas == (0.0, 0.999)
    assert TrainConfig(weight_bits=1, act_bits=1, beta1=0.9).adam_betas == (0.9, 0.999)
    assert train_mod.config_dict(TrainConfig(weight_bits=1, act_bits=1))["beta1"] == 0.7
    for bad in (1.0, -0.1, True, "0.5"):
        with pytest.raises(ValueError, match="beta1"):
            TrainConfig(beta1=bad)
    seen = []

    class Recording(torch.optim.Adam):
        def __init__(self, params, **kw):
            seen.append(kw["betas"])
            super().__init__(params, **kw)

    monkeypatch.setattr(train_mod.torch.optim, "Adam", Recording)
    cfg = TrainConfig(weight_bits=1, act_bits=1, surrogate="ste", epochs=1)
    train_qat(cfg, splits(cfg))
    assert seen == [(0.7, 0.999)]  # the learned input thresholds run their own Adam steps


def test_lr_schedule_and_binary_grad_per_configuration(splits, monkeypatch):
    """The flat cosine and the triangle for the MLP w1a1 at a 1-bit input with the STE only
    (the smooth surrogates lose with them); explicit values win; train.json records the
    resolved ones; a run's scheduler follows lr_factor."""
    from softfloor import train as train_mod
    from softfloor.train import config_dict, lr_factor
    w1a1 = TrainConfig(weight_bits=1, act_bits=1, surrogate="ste")
    assert (w1a1.learning_rate_schedule, w1a1.binary_grad) == ("flat_cosine", "triangle")
    assert TrainConfig(weight_bits=1, act_bits=1, first_weight_bits=8,
                       surrogate="ste").binary_grad == "triangle"
    for cfg in (TrainConfig(surrogate="ste"), TrainConfig(weight_bits=1, act_bits=2),
                TrainConfig(weight_bits=2, act_bits=1, surrogate="ste"),
                TrainConfig(act_bits=1, surrogate="ste"),
                TrainConfig(weight_bits=1, act_bits=1, input_bits=4, surrogate="ste"),
                TrainConfig(weight_bits=1, act_bits=1, arch="cnn", surrogate="ste"),
                TrainConfig(weight_bits=1, act_bits=1, surrogate="sigmoid"),
                TrainConfig(weight_bits=1, act_bits=1, surrogate="lsq")):
        assert (cfg.learning_rate_schedule, cfg.binary_grad) == ("cosine", "box"), cfg
    cfg = TrainConfig(weight_bits=1, act_bits=1, lr_schedule="cosine", binary_act_grad="box",
                      surrogate="ste")
    assert (cfg.learning_rate_schedule, cfg.binary_grad) == ("cosine", "box")
    assert TrainConfig(act_bits=1, binary_act_grad="triangle").binary_grad == "triangle"
    d = config_dict(w1a1)
    assert (d["lr_schedule"], d["binary_act_grad"]) == ("flat_cosine", "triangle")
    assert TrainConfig.from_dict(d) == TrainConfig.from_dict(d)
    with pytest.raises(ValueError, match="lr_schedule must be one of cosine, flat_cosine"):
        TrainConfig(lr_schedule="linear")
    with pytest.raises(ValueError, match="binary_grad must be one of box, triangle"):
        TrainConfig(act_bits=1, binary_act_grad="sawtooth")
    with pytest.raises(ValueError, match="shapes the gradient of 1-bit activations"):
        TrainConfig(act_bits=2, binary_act_grad="triangle")
    # the factors: cosine over all steps; flat to the middle, then a cosine over the rest
    assert [lr_factor("cosine", k, 4) for k in (0, 2, 4, 9)] == pytest.approx([1, 0.5, 0, 0])
    assert [lr_factor("flat_cosine", k, 8) for k in (0, 3, 4, 6, 8, 20)] == \
        pytest.approx([1, 1, 1, 0.5, 0, 0])
    with pytest.raises(ValueError, match="lr schedule"):
        lr_factor("step", 0, 1)
    seen = []
    orig = train_mod.torch.optim.lr_scheduler.LambdaLR

    def recording(opt, fn):
        seen.append([fn(k) for k in range(0, 40, 5)])
        return orig(opt, fn)

    monkeypatch.setattr(train_mod.torch.optim.lr_scheduler, "LambdaLR", recording)
    train_qat(TrainConfig(weight_bits=1, act_bits=1, surrogate="ste", epochs=1), splits(w1a1))
    total = math.ceil(len(splits(w1a1).y_train) / 64)
    assert seen == [[lr_factor("flat_cosine", k, total) for k in range(0, 40, 5)]]


def test_diverged_scales_are_a_clear_error(splits, monkeypatch):
    """Scales that drifted apart beyond the model file's limits: TrainingDiverged names the
    layer and the limits (from check_integer_scales, and from train_qat with the run's
    history), instead of an overflow inside the integer forward."""
    from softfloor import train as train_mod
    from softfloor.train import TrainingDiverged, check_integer_scales
    m = QuantMLP((16, 12, 8, 10), 1, 1, 1, "ste")
    check_integer_scales(m)
    m.acts[1].log2_scale.data.fill_(-80.0)       # layer 2's output: a multiplier of ~2**80
    with pytest.raises(TrainingDiverged, match=r"layer 2's requantization needs shift 0, "
                                               r"multiplier 2\*\*7\d .* below 2\*\*31"):
        check_integer_scales(m)
    m.acts[1].log2_scale.data.fill_(0.0)
    m.acts[0].log2_scale.data.fill_(90.0)        # layer 1's output: a shift above 62
    with pytest.raises(TrainingDiverged, match="layer 1's requantization needs shift 9"):
        check_integer_scales(m)

    def fake_check(model):
        model.acts[0].log2_scale.data.fill_(100.0)
        return orig(model)

    orig = train_mod.check_integer_scales
    monkeypatch.setattr(train_mod, "check_integer_scales", fake_check)
    cfg = TrainConfig(weight_bits=1, act_bits=1, surrogate="ste", epochs=2)
    with pytest.raises(TrainingDiverged, match="layer 1's requantization") as e:
        train_qat(cfg, splits(cfg))
    assert len(e.value.history) == 2 and e.value.seconds > 0


def test_input_quantizer_per_configuration():
    """Learned per-pixel thresholds for the MLP at a 1-bit input, the one global scale
    elsewhere; the split digits_split loads (the calibrated thresholds they start from) is the
    one train_qat accepts; train.json records it."""
    from softfloor.train import config_dict, digits_split
    assert TrainConfig(weight_bits=1, act_bits=1).input_quantizer == "learned"
    assert TrainConfig(act_bits=1).input_quantizer == "learned"
    for cfg in (TrainConfig(), TrainConfig(weight_bits=1, act_bits=1, input_bits=4),
                TrainConfig(weight_bits=1, act_bits=1, arch="cnn"),
                TrainConfig(weight_bits=1, act_bits=1, input_quant="global")):
        assert cfg.input_quantizer == "global", cfg
    cfg = TrainConfig(weight_bits=1, act_bits=1)
    assert digits_split(cfg).input_quant == "per_pixel"
    assert config_dict(cfg)["input_quant"] == "learned"
    assert TrainConfig.from_dict(config_dict(cfg)).input_quantizer == "learned"


def test_augment_defaults_per_configuration():
    assert TrainConfig(weight_bits=1, act_bits=1).augment_options == (0, 0.05)
    assert TrainConfig(weight_bits=1, act_bits=1, input_bits=4).augment_options == (0, 0.3)
    assert TrainConfig(weight_bits=1, act_bits=1, augment_noise=0.0).augment_options == (0, 0.0)
    assert TrainConfig(weight_bits=1, act_bits=1, augment_shift=2).augment_options == (2, 0.05)
    for cfg in (TrainConfig(), TrainConfig(weight_bits=2, act_bits=2),
                TrainConfig(weight_bits=1, act_bits=2),
                TrainConfig(weight_bits=1, act_bits=1, arch="cnn")):
        assert cfg.augment_options == (0, 0.0)

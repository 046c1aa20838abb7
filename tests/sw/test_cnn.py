"""The digits CNN: train -> export -> golden is bit-exact; the integer ops agree with torch's."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from softfloor import cli, golden, intmodel
from softfloor.cnn import (FloatCNN, IntConvLayer, QuantCNN, QuantConv2d, int_conv2d,
                           int_maxpool2d)
from softfloor.nn.exporter import export, export_result
from softfloor.intmodel import (ChannelRequant, Conv2d, Dense, Flatten, MaxPool2d, ModelFormatError,
                                Requant)
from softfloor.quant import QuantReLU
from softfloor.train import (TrainConfig, hard_codes, load_checkpoint,
                             save_checkpoint, train_float, train_qat)
from tests.sw.exactness import assert_bit_exact, splits, trained_and_exported  # noqa: F401

SHORT = 3


@pytest.mark.parametrize("wb, ab, ib, surrogate", [
    (4, 4, None, "sigmoid"), (2, 2, None, "ste"), (1, 1, None, "ste"), (8, 8, None, "dsq"),
    (3, 5, 8, "lsq"), (1, 2, 1, "pact"),
])
def test_cnn_export_is_bit_exact(wb, ab, ib, surrogate, splits, tmp_path):
    cfg = TrainConfig(arch="cnn", weight_bits=wb, act_bits=ab, input_bits=ib,
                      surrogate=surrogate, epochs=SHORT)
    split = splits(cfg)
    res = train_qat(cfg, split)
    assert isinstance(res.model, QuantCNN)
    assert res.accuracy["bit_exact"] is True
    model = export_result(res, split.input_spec, name="cnn")
    loaded = intmodel.load(intmodel.save(model, tmp_path / "m.intmodel.json"))
    assert loaded.to_dict() == model.to_dict()
    assert_bit_exact(res.model, split, loaded)
    acc = float(np.mean(golden.predict(loaded, split.c_test) == split.y_test))
    assert acc == res.accuracy["test"]
    assert loaded.meta["train_config"]["arch"] == "cnn" and loaded.meta["arch"] == "cnn"
    assert loaded.input.shape == (1, 8, 8)
    assert loaded.output.scale == 2.0 ** res.model.output_exp
    assert [type(x) for x in loaded.layers] == [Conv2d, Requant, MaxPool2d, Conv2d, Requant,
                                                MaxPool2d, Flatten, Dense]
    for layer in loaded.layers:
        if isinstance(layer, Conv2d):
            assert layer.padding == (1, 1, 1, 1) and layer.pad_value == 0
            assert layer.kernel == (3, 3) and layer.weight_bits == wb
        if isinstance(layer, Requant):
            assert (layer.rounding, layer.lo, layer.hi, layer.signed) == \
                ("half_up", 0, 2 ** ab - 1, False)
        if isinstance(layer, MaxPool2d):
            assert layer.kernel == layer.stride == (2, 2)


def test_cnn_widths_are_minimal(splits):
    split = splits(4)
    res = train_qat(TrainConfig(arch="cnn", epochs=2), split)
    model = export(res.model, split.input_spec)
    weighted = [i for i, x in enumerate(model.layers) if isinstance(x, (Conv2d, Dense))]
    assert len(weighted) == 3
    for i in weighted:
        layers = list(model.layers)
        old = layers[i]
        if isinstance(old, Conv2d):
            layers[i] = Conv2d(old.name, old.weight, old.bias, old.weight_bits, old.bias_bits,
                               old.acc_bits - 1, old.stride, old.padding, old.pad_value)
        else:
            layers[i] = Dense(old.name, old.weight, old.bias, old.weight_bits, old.bias_bits,
                              old.acc_bits - 1)
        with pytest.raises(ModelFormatError, match="can overflow"):
            intmodel.IntModel(model.input, layers, model.output)


def test_cnn_negative_shift_becomes_a_multiplier(splits):
    split = splits(4)
    res = train_qat(TrainConfig(arch="cnn", epochs=2), split)
    m = res.model
    conv, act = m.convs[1], m.acts[1]
    act.log2_scale.data.fill_(float(m.acts[0].exp + conv.wq.exp - 2))  # 4x finer than the acc
    model = export(m, split.input_spec)
    rq = model.layers[4]
    assert rq.name == "act2" and (rq.shift, rq.multiplier) == (0, 4)
    assert_bit_exact(m, split, model)


def test_cnn_checkpoint_round_trip(splits, tmp_path):
    split = splits(4)
    res = train_qat(TrainConfig(arch="cnn", epochs=2, seed=3), split)
    back = load_checkpoint(save_checkpoint(res, tmp_path / "m.pt"))
    assert isinstance(back.model, QuantCNN) and back.config.arch == "cnn"
    assert np.array_equal(hard_codes(back.model, split.c_test), hard_codes(res.model, split.c_test))
    fl = train_float(TrainConfig(arch="cnn", epochs=1), split)
    assert isinstance(fl.model, FloatCNN)
    back = load_checkpoint(save_checkpoint(fl, tmp_path / "f.pt"))
    assert isinstance(back.model, FloatCNN)


def test_cnn_config_validation():
    with pytest.raises(ValueError, match="arch must be one of mlp, cnn"):
        TrainConfig(arch="resnet")
    with pytest.raises(ValueError, match="batchnorm with scales 'free' is not implemented"):
        TrainConfig(arch="cnn", batchnorm=True, scales="free")
    with pytest.raises(ValueError, match="batchnorm with scales='free' is not implemented"):
        QuantCNN(batchnorm=True, scales="free")
    assert TrainConfig(arch="cnn", weight_bits=1, act_bits=1).use_batchnorm is False
    assert TrainConfig(arch="cnn", batchnorm=True).use_batchnorm is True
    assert TrainConfig(weight_bits=1, act_bits=2).use_batchnorm is True
    assert TrainConfig.from_dict(TrainConfig(arch="cnn").to_dict()).arch == "cnn"
    assert TrainConfig.from_dict({"epochs": 3}).arch == "mlp"  # old checkpoints: the MLP


@pytest.mark.parametrize("pad_value, padding", [(0, (1, 1, 1, 1)), (3, (2, 0, 1, 1)),
                                                (-2, (0, 0, 0, 0))])
def test_int_conv2d_equals_torch_conv(pad_value, padding):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-8, 8, (5, 3, 7, 6), generator=g)
    w = torch.randint(-8, 8, (4, 3, 3, 2), generator=g)
    b = torch.randint(-100, 100, (4,), generator=g)
    got = int_conv2d(x, w, b, padding, pad_value)
    pt, pl, pb, pr = padding
    xp = F.pad(x.double(), (pl, pr, pt, pb), value=float(pad_value))
    want = F.conv2d(xp, w.double(), b.double())
    assert got.dtype == torch.int64 and torch.equal(got.double(), want)


def test_int_maxpool_equals_torch_and_commutes_with_the_quantizer():
    g = torch.Generator().manual_seed(2)
    x = torch.randint(-50, 50, (4, 3, 9, 8), generator=g)
    assert torch.equal(int_maxpool2d(x, 2).double(), F.max_pool2d(x.double(), 2))
    act = QuantReLU(3, "sigmoid").double()
    act.surrogate.hard = True
    act.log2_scale.data.fill_(-2.0)
    z = torch.randn(4, 3, 8, 8, generator=g, dtype=torch.float64)
    assert torch.equal(F.max_pool2d(act(z), 2), act(F.max_pool2d(z, 2)))


def test_quant_conv2d_matches_its_integer_form():
    torch.manual_seed(0)
    conv = QuantConv2d(2, 3, 3, 1, weight_bits=3).double()
    codes = torch.randint(0, 16, (4, 2, 5, 5))
    y = conv(codes.double() * 2.0 ** -4, -4) / 2.0 ** conv.acc_exp(-4)
    acc = int_conv2d(codes, conv.weight_codes(), conv.bias_codes(-4), (1, 1, 1, 1), 0)
    assert torch.equal(y, acc.double())
    assert conv.weight_codes().abs().max() <= 4 and conv.weight_codes().min() >= -4


def test_cnn_shapes_and_integer_layers():
    m = QuantCNN()
    assert m(torch.zeros(3, 64)).shape == (3, 10)
    assert FloatCNN()(torch.zeros(3, 64)).shape == (3, 10)
    assert m.flat_features == 64
    ils = m.integer_layers()
    assert [type(x) for x in ils][:2] == [IntConvLayer, IntConvLayer]
    assert [tuple(x.weight.shape) for x in ils] == [(8, 1, 3, 3), (16, 8, 3, 3), (10, 64)]
    with pytest.raises(ValueError, match="too small"):
        QuantCNN(channels=(8, 16, 32, 64))


def test_export_rejects_a_mismatched_input_spec(splits):
    split = splits(4)
    with pytest.raises(ValueError, match="does not match the model's input"):
        export(QuantCNN(input_bits=3), split.input_spec)


def test_cli_arch_choices_match_the_trainer():
    from softfloor import flow, train
    assert flow.ARCHS == train.ARCHS


@pytest.mark.sim
def test_cnn_flow_runs_through_the_rtl(tmp_path):
    """``flow --arch cnn`` stage by stage (with BatchNorm folded into the convolutions):
    data/train/export/golden, then the generated conv/pool/dense RTL on Verilator is bit-exact
    on every test sample, at the manifest's latency and initiation interval."""
    from softfloor.sim import tools
    tools.ensure("verilator")
    out = tmp_path / "cnn"
    common = ["--out", str(out), "--quiet"]
    for stage in ("data", "train"):
        assert cli.main([stage, *common, "--arch", "cnn", "--epochs", "2", "--batchnorm"]) == 0
    for stage in ("export", "golden", "rtl"):
        assert cli.main([stage, *common]) == 0
    tr = json.loads((out / "train.json").read_text())
    assert tr["config"]["arch"] == "cnn" and tr["config"]["batchnorm"] is True
    model = intmodel.load(out / "model.intmodel.json")
    assert model.name == "digits-cnn" and any(isinstance(x, Conv2d) for x in model.layers)
    gd = json.loads((out / "stages" / "golden.json").read_text())
    assert gd["accuracy"] == tr["accuracy_quantized"]
    man = json.loads((out / "manifest.json").read_text())
    assert [e["kind"] for e in man["layers"]][:2] == ["conv", "pool"]
    assert cli.main(["sim", *common, "--simulator", "verilator"]) == 0
    cli.main(["report", *common])
    rep = json.loads((out / "report.json").read_text())
    assert rep["config"]["arch"] == "cnn"
    assert rep["bit_exact"]["verilator"]["mismatches"] == 0
    assert rep["bit_exact"]["verilator"]["samples"] == len(np.load(out / "vectors.npz")["golden"])
    assert rep["hardware"]["cycles_per_inference"] == man["cycles_per_inference"]
    assert rep["hardware"]["initiation_interval"] == man["initiation_interval"]
    assert rep["accuracy"]["rtl"] == rep["accuracy"]["golden"]


@pytest.mark.parametrize("wb, ab, surrogate", [(4, 4, "sigmoid"), (2, 2, "ste")])
def test_cnn_per_channel_export_is_bit_exact(wb, ab, surrogate, splits, tmp_path):
    cfg = TrainConfig(arch="cnn", weight_bits=wb, act_bits=ab, surrogate=surrogate,
                      epochs=SHORT, per_channel=True)
    split = splits(cfg)
    res = train_qat(cfg, split)
    m = res.model
    assert all(c.wq.exp.shape == (c.out_channels,) for c in m.convs)
    assert not m.fc.wq.per_channel
    with torch.no_grad():  # force distinct exponents, one shift negative (a multiplier)
        c2 = m.convs[1]
        c2.wq.log2_scale[0] = float(m.acts[1].exp - m.acts[0].exp + 1)
        c2.wq.log2_scale[1] = float(m.acts[1].exp - m.acts[0].exp - 3)
    model = export(m, split.input_spec)
    loaded = intmodel.load(intmodel.save(model, tmp_path / "m.intmodel.json"))
    assert [type(x).__name__ for x in loaded.layers] == [
        "Conv2d", "ChannelRequant", "MaxPool2d", "Conv2d", "ChannelRequant", "MaxPool2d",
        "Flatten", "Dense"]
    rq = loaded.layers[4]
    assert (int(rq.shift[0]), int(rq.multiplier[0])) == (0, 2)
    assert (int(rq.shift[1]), int(rq.multiplier[1])) == (3, 1)
    assert loaded.meta["per_channel"] is True
    assert_bit_exact(m, split, loaded)


def test_cnn_hardtanh_export_is_bit_exact(splits, tmp_path):
    """Signed activation codes in the CNN: signed requants, max-pool of signed codes, zero
    padding is still the code 0."""
    cfg = TrainConfig(arch="cnn", act_bits=3, surrogate="ste", epochs=SHORT,
                      activation="hardtanh")
    res, split, model = trained_and_exported(cfg, splits, tmp_path)
    rqs = [x for x in model.layers if isinstance(x, Requant)]
    assert [(r.signed, r.lo, r.hi) for r in rqs] == [(True, -4, 3)] * 2
    assert [x.pad_value for x in model.layers if isinstance(x, Conv2d)] == [0, 0]
    _, per_layer = hard_codes(res.model, split.c_test, intermediates=True)
    assert per_layer[2].min() < 0  # a pooled window of negative codes stays negative


def test_cnn_first_weight_bits_export_is_bit_exact(splits, tmp_path):
    """``first_weight_bits``: the first convolution at its own weight width, the second and
    the dense layer at ``weight_bits``."""
    cfg = TrainConfig(arch="cnn", weight_bits=1, act_bits=2, first_weight_bits=8,
                      surrogate="ste", epochs=SHORT)
    res, split, model = trained_and_exported(cfg, splits, tmp_path)
    assert res.model.layer_weight_bits == (8, 1, 1)
    weighted = [x for x in model.layers if hasattr(x, "weight_bits")]
    assert [x.weight_bits for x in weighted] == [8, 1, 1]
    assert len(np.unique(weighted[0].weight)) > 3
    assert set(np.unique(weighted[1].weight)) <= {-1, 1}


@pytest.mark.parametrize("ab, surrogate, pc, act", [(4, "sigmoid", False, "relu"),
                                                    (3, "lsq", True, "hardtanh")])
def test_cnn_free_scales_export_is_bit_exact(ab, surrogate, pc, act, splits, tmp_path):
    """Free scales in the CNN: requants with integer multipliers (per channel with
    per-channel weight scales); the trained forward on codes, the torch integer forward and the
    golden model agree on every op."""
    cfg = TrainConfig(arch="cnn", act_bits=ab, surrogate=surrogate, epochs=SHORT,
                      per_channel=pc, activation=act, scales="free")
    res, split, model = trained_and_exported(cfg, splits, tmp_path)
    trace = []
    with torch.no_grad():
        res.model.forward_free(torch.as_tensor(split.c_test, dtype=torch.float64)
                               * 2.0 ** res.model.input_exp, codes=True, trace=trace)
    _, per_layer = hard_codes(res.model, split.c_test, intermediates=True)
    assert len(trace) == len(per_layer) == len(model.layers)
    for t, want in zip(trace, per_layer):
        assert np.array_equal(t.numpy(), want.astype(np.float64))
    rqs = [x for x in model.layers if isinstance(x, (Requant, ChannelRequant))]
    assert len(rqs) == 2 and all(isinstance(r, ChannelRequant) == pc for r in rqs)
    assert all(np.any(np.asarray(r.multiplier) & (np.asarray(r.multiplier) - 1)) for r in rqs)
    assert model.meta["scales"] == "free" and model.output.scale == float(
        res.model.free_plan()[-1][0])


@pytest.mark.parametrize("surrogate, pc, hard", [("ste", False, True), ("sigmoid", True, False),
                                                 ("lsq", True, True), ("dsq", False, False)])
def test_cnn_free_scales_at_powers_of_two_are_the_po2_cnn(surrogate, pc, hard):
    """Integer log2 scales: the free CNN on codes has the po2 CNN's logits and gradients."""
    torch.manual_seed(4)
    kw = dict(weight_bits=4, act_bits=3, input_bits=4, surrogate=surrogate, per_channel=pc,
              activation="hardtanh")
    po2, free = QuantCNN(**kw, dtype=torch.float64), QuantCNN(**kw, scales="free")
    gen = torch.Generator().manual_seed(1)
    x = torch.randint(0, 16, (12, 64), generator=gen).to(torch.float64) / 16
    y = torch.randint(0, 10, (12,), generator=gen)
    po2.calibrate(x)
    with torch.no_grad():
        for m in (*po2.convs, po2.fc, *po2.acts):
            ls = m.wq.log2_scale if hasattr(m, "wq") else m.log2_scale
            ls.copy_(torch.floor(ls + 0.5))
    free.load_state_dict(po2.state_dict())
    grads = []
    for m in (po2, free):
        m.set_surrogate(4.0, hard)
        F.cross_entropy(m(x), y).backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    assert torch.allclose(po2(x), free(x), rtol=1e-12, atol=1e-12)
    for ga, gb in zip(*grads, strict=True):
        assert torch.allclose(ga, gb, rtol=1e-9, atol=1e-12), (ga, gb)


@pytest.mark.parametrize("wb, ab, surrogate, pc", [(2, 2, "ste", False), (1, 1, "sigmoid", False),
                                                   (4, 4, "lsq", True)])
def test_cnn_batchnorm_folds_into_the_convolutions(wb, ab, surrogate, pc, splits, tmp_path):
    """BatchNorm in the CNN: folded into every convolution (per channel), statistics frozen in
    the hard phase, exported as plain convolutions, bit-exact."""
    cfg = TrainConfig(arch="cnn", weight_bits=wb, act_bits=ab, surrogate=surrogate,
                      epochs=SHORT, batchnorm=True, per_channel=pc)
    res, split, model = trained_and_exported(cfg, splits, tmp_path)
    m = res.model
    assert m.batchnorm and all(c.bn is not None and not c.bn.use_batch for c in m.convs)
    assert model.meta["train_config"]["batchnorm"] is True
    assert [type(x).__name__ for x in model.layers][:2] == [
        "Conv2d", "ChannelRequant" if pc else "Requant"]
    conv = m.convs[0]
    wf, bf = conv.folded()
    g = conv.bn.gamma / torch.sqrt(conv.bn.running_var + conv.bn.eps)
    assert torch.allclose(wf, conv.weight * g[:, None, None, None])
    assert torch.equal(conv.weight_codes(), conv.wq.codes(wf))
    bias = np.asarray(model.layers[0].bias)
    assert np.array_equal(conv.bias_codes(m.input_exp).numpy(), bias)
    with torch.no_grad():  # the running statistics are those the export used
        conv.bn.running_mean += 1.0
    assert not np.array_equal(conv.bias_codes(m.input_exp).numpy(), bias)


def test_cnn_batchnorm_uses_batch_statistics_while_soft():
    """In the soft phase one convolution with the weights folded by the running statistics,
    quantized and unfolded (``Q(w g) / g``), normalised with its own batch statistics over (N,
    H, W), which move the running ones (those of the convolution + bias); in the hard phase the
    running fold, the statistics frozen."""
    torch.manual_seed(0)
    m = QuantCNN(2, 2, 4, "ste", batchnorm=True).train()
    x = torch.rand(16, 64, dtype=m.dtype)
    m.calibrate(x)
    conv, e = m.convs[0], m.input_exp
    bn, img = conv.bn, m._image(x)
    m.set_surrogate(1.0, False)
    g = (bn.gamma / torch.sqrt(bn.running_var + bn.eps))[:, None, None, None]
    z = F.conv2d(img, conv.wq(conv.weight * g) / g, None, padding=conv.padding)
    mean, var = z.mean(dim=(0, 2, 3)), z.var(dim=(0, 2, 3), unbiased=False)
    c = (slice(None), None, None)
    want = (z - mean[c]) / torch.sqrt(var + bn.eps)[c] * bn.gamma[c] + bn.beta[c]
    rm, rv = bn.running_mean.clone(), bn.running_var.clone()
    assert torch.allclose(conv(img, e), want, atol=1e-5)
    assert torch.allclose(bn.running_mean, rm.lerp(mean + conv.bias, bn.momentum), atol=1e-6)
    assert torch.allclose(bn.running_var, rv.lerp(var, bn.momentum), rtol=1e-4, atol=1e-7)
    m.set_surrogate(1.0, True)
    frozen = bn.running_mean.clone()
    hard = conv(img, e)
    assert torch.equal(bn.running_mean, frozen)
    wf, bf = conv.folded()
    g2 = bn.gamma / torch.sqrt(bn.running_var + bn.eps)
    assert torch.allclose(wf, conv.weight * g2[:, None, None, None])
    assert torch.allclose(hard, F.conv2d(img, conv.wq(wf), conv.bias_codes(e).to(img.dtype)
                                         * 2.0 ** conv.acc_exp(e), padding=conv.padding))

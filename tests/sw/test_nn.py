"""softfloor.nn: layers on their own, the generic exporter, and exactness on random networks."""
import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from softfloor import golden, intmodel
from softfloor import nn as snn
from softfloor.intmodel import Lut
from tests.randnn import random_net

#: Random networks per run (``SOFTFLOOR_NN_COUNT``), from ``SOFTFLOOR_NN_BASE`` (default 0).
COUNT = int(os.environ.get("SOFTFLOOR_NN_COUNT", "300"))
BASE = int(os.environ.get("SOFTFLOOR_NN_BASE", "0"))


def exact(model, x):
    """export(model) run by the golden model == the hard forward, every output code."""
    m = snn.export(model)
    want = snn.hard_forward_codes(model, x)
    got = golden.run(m, m.input.quantize(np.asarray(x)))
    return m, want, got


@pytest.mark.parametrize("chunk", range(4))
def test_random_networks_are_bit_exact(chunk):
    """Random chains of softfloor.nn layers (depth 1..6, dense and conv, 1..8 bits per layer,
    every surrogate, per-channel, po2 and free scales, BatchNorm folded / threshold / none,
    tables, pools, strides, padding): the hard forward equals the golden model of the export
    on every sample. A failure names the seed; reproduce it with SOFTFLOOR_NN_BASE=<seed>
    SOFTFLOOR_NN_COUNT=4."""
    seeds = range(BASE + chunk, BASE + COUNT, 4)
    bad = []
    for seed in seeds:
        try:
            model, x = random_net(seed)
            m, want, got = exact(model, x)
            if not np.array_equal(want, got):
                n = int(np.sum(np.any(want != got, axis=1)))
                bad.append(f"seed {seed}: {n}/{len(want)} samples differ")
        except Exception as e:  # an export error is a failure too: every such model exports
            bad.append(f"seed {seed}: {type(e).__name__}: {e}")
    assert not bad, "; ".join(bad) + " (reproduce: SOFTFLOOR_NN_BASE=<seed> SOFTFLOOR_NN_COUNT=4)"


def train_steps(net, x, y, steps: int, lr: float) -> None:
    """A user's own training loop: Adam on the cross-entropy of the network's output."""
    opt = torch.optim.Adam(net.parameters(), lr)
    for _ in range(steps):
        loss = F.cross_entropy(net(x), y)   # a QuantTensor acts as its real values
        opt.zero_grad()
        loss.backward()
        opt.step()


def _x(shape, n=32, seed=0):
    return torch.as_tensor(np.random.default_rng(seed).random((n, *shape)))


class Net(nn.Module):
    """A user's own module: layers as attributes, torch.flatten in forward."""

    def __init__(self):
        super().__init__()
        self.inp = snn.QuantInput(4)
        self.conv = snn.QuantConv2d(1, 4, 3, 1, 4, stride=2)
        self.act = snn.QuantReLU(4, "ste")
        self.pool = snn.QuantMaxPool2d(2)
        self.fc = snn.QuantLinear(4 * 2 * 2, 3, 4)

    def forward(self, x):
        x = self.pool(self.act(self.conv(self.inp(x.view(-1, 1, 8, 8)))))
        return self.fc(torch.flatten(x, 1))


def test_own_module_traces_trains_and_exports_exactly():
    torch.manual_seed(0)
    net = Net()
    x = _x((64,))
    snn.calibrate(net, x)
    y = torch.randint(0, 3, (32,))
    train_steps(net, x, y, 2, 1e-2)
    assert net.conv.weight.grad is not None and net.act.log2_scale.grad is not None
    m, want, got = exact(net, x)
    assert np.array_equal(want, got)
    assert [op.op for op in m.layers] == ["conv2d", "requant", "maxpool2d", "flatten", "dense"]
    assert m.input.shape == (1, 8, 8) and m.layers[0].stride == (2, 2)
    assert net(x).argmax(1).shape == (32,)


def test_sigmoid_and_tanh_export_as_tables_exactly():
    torch.manual_seed(1)
    for cls, signed in ((snn.QuantSigmoid, False), (snn.QuantTanh, True)):
        net = nn.Sequential(snn.QuantInput(6), snn.QuantLinear(5, 7, 4), cls(4, 5),
                            snn.QuantLinear(7, 3, 4))
        x = _x((5,))
        snn.calibrate(net, x)
        m, want, got = exact(net, x)
        assert np.array_equal(want, got)
        lut = [op for op in m.layers if isinstance(op, Lut)]
        assert len(lut) == 1 and lut[0].signed is signed and len(lut[0].table) == 32
        back = intmodel.IntModel.from_dict(m.to_dict())
        assert np.array_equal(golden.run(back, m.input.quantize(x.numpy())), got)



@pytest.mark.sim
def test_sigmoid_and_tanh_tables_run_through_flow_on_both_simulators(tmp_path):
    """A softfloor.nn network with QuantSigmoid and QuantTanh, trained a few steps, exports to
    two ``lut`` ops that ``flow --model`` runs on Verilator and Icarus: every output code equals
    the hard forward's."""
    from softfloor import cli
    from softfloor.sim import tools
    for sim in tools.SIMULATORS:
        tools.ensure(sim)
    torch.manual_seed(3)
    net = nn.Sequential(snn.QuantInput(4), snn.QuantLinear(16, 8, 4), snn.QuantSigmoid(4, 5),
                        snn.QuantLinear(8, 8, 3), snn.QuantTanh(3, 5), snn.QuantLinear(8, 4, 4))
    x = _x((16,), 40, seed=4)
    y = torch.as_tensor(np.random.default_rng(4).integers(0, 4, 40))
    snn.calibrate(net, x, y)
    train_steps(net, x, y, 3, 1e-2)
    m, want, got = exact(net, x)
    assert np.array_equal(want, got)
    assert [op.op for op in m.layers].count("lut") == 2
    intmodel.save(m, tmp_path / "net.intmodel.json")
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "y.npy", y.numpy())
    out = tmp_path / "out"
    assert cli.main(["flow", "--out", str(out), "--model", str(tmp_path / "net.intmodel.json"),
                     "--inputs", str(tmp_path / "x.npy"), "--labels", str(tmp_path / "y.npy"),
                     "--no-synth", "--quiet"]) == 0
    rep = json.loads((out / "report.json").read_text())
    vec = np.load(out / "vectors.npz")
    for sim in tools.SIMULATORS:
        assert rep["bit_exact"][sim]["mismatches"] == 0
        np.testing.assert_array_equal(vec[f"rtl_{sim}"], want)
    man = json.loads((out / "manifest.json").read_text())
    assert [l["kind"] for l in man["layers"]].count("lut") == 2


def test_learned_input_thresholds_train_in_the_users_loop_and_export():
    torch.manual_seed(2)
    net = nn.Sequential(snn.QuantInput(1, thresholds="learned"), snn.QuantLinear(16, 8, 2),
                        snn.QuantReLU(2, "ste"), snn.QuantLinear(8, 2, 2))
    x = _x((16,), 64)
    y = (x[:, :8].sum(1) > x[:, 8:].sum(1)).long()
    snn.calibrate(net, x, y)
    t0 = net[0].threshold.detach().clone()
    train_steps(net, x, y, 5, 5e-2)
    assert not torch.equal(net[0].threshold.detach(), t0)
    m, want, got = exact(net, x)
    assert np.array_equal(want, got) and m.input.per_value and m.input.bits == 1


def test_learned_thresholds_compare_in_training_and_apply_the_exported_rule_in_eval():
    q = snn.QuantInput(1, thresholds="learned")
    x = _x((32,), 200).double()
    q.calibrate(x, (x[:, 0] > x[:, 1]).long())
    t = q.threshold.detach()
    x[0] = t  # on the thresholds: code 1 both ways
    train = q.train()(x).value
    assert train.dtype == torch.get_default_dtype()
    assert torch.equal(train, (x >= t).to(train.dtype) * 2.0 ** q.exp)
    want = q.spec().quantize(x.numpy())
    assert np.array_equal(q.eval()(x).value.detach().numpy() / 2.0 ** q.exp, want)


class Base(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.fc1 = snn.QuantInput(4), snn.QuantLinear(8, 8, 4)
        self.a1, self.fc2 = snn.QuantReLU(4), snn.QuantLinear(8, 8, 4)
        self.gelu, self.lin, self.bn = nn.GELU(), nn.Linear(8, 8), nn.BatchNorm1d(8)


class Residual(Base):
    def forward(self, x):
        y = self.a1(self.fc1(self.inp(x)))
        return self.fc2(y) + y


class Concat(Base):
    def forward(self, x):
        y = self.inp(x)
        return torch.cat([self.fc1(y), self.fc2(y)], 1)


class Gelu(Base):
    def forward(self, x):
        return self.fc2(self.gelu(self.fc1(self.inp(x))))


class FRelu(Base):
    def forward(self, x):
        return self.fc2(F.relu(self.fc1(self.inp(x))))


class FloatLinear(Base):
    def forward(self, x):
        return self.fc2(self.lin(self.a1(self.fc1(self.inp(x)))))


class TorchBatchNorm(Base):
    def forward(self, x):
        return self.fc2(self.a1(self.bn(self.fc1(self.inp(x)))))


class Branch(Base):
    def forward(self, x):
        y = self.a1(self.fc1(self.inp(x)))
        return self.fc2(y), self.fc1(y)


@pytest.mark.parametrize("cls, match", [
    (Residual, r"node 'add' .*a residual add"),
    (Concat, r"node 'cat' .*a concat"),
    (Gelu, r"layer 'gelu' \(GELU\) is a float layer between quantized ones"),
    (FRelu, r"node 'relu' .*relu\(\) is a float function between quantized ones"),
    (FloatLinear, r"layer 'lin' \(Linear\).*QuantLinear"),
    (TorchBatchNorm, r"layer 'bn' \(BatchNorm1d\).*batchnorm=True"),
    (Branch, r"feeds more than one operation \(a branch\)"),
])
def test_what_a_chain_cannot_express_is_a_clear_error(cls, match):
    with pytest.raises(snn.ExportError, match=match):
        snn.export(cls())


def test_float_pooling_and_softmax_name_what_to_use():
    for layer, match in ((nn.AvgPool2d(2), r"layer '1' \(AvgPool2d\).*QuantMaxPool2d"),
                         (nn.Softmax(1), r"layer '1' \(Softmax\).*argmax of the logits")):
        with pytest.raises(snn.ExportError, match=match):
            snn.export(nn.Sequential(snn.QuantInput(4, scale=0.1, shape=(1, 4, 4)), layer))


def test_other_export_errors_name_the_layer():
    with pytest.raises(snn.ExportError, match="does not start with a softfloor.nn.QuantInput"):
        snn.export(nn.Sequential(snn.QuantLinear(4, 2)))
    net = nn.Sequential(snn.QuantInput(4, scale=0.1, shape=(4,)),
                        snn.QuantLinear(4, 3, 2, batchnorm="threshold"), snn.QuantReLU(2))
    with pytest.raises(snn.ExportError, match=r"layer '2' \(QuantReLU\).*1-bit"):
        snn.export(net)
    with pytest.raises(snn.ExportError, match="Flatten before it"):
        snn.export(nn.Sequential(snn.QuantInput(4, scale=0.1, shape=(1, 4, 4)),
                                 snn.QuantLinear(16, 2)))


def test_a_layer_on_its_own_needs_quantized_input():
    with pytest.raises(TypeError, match="needs quantized inputs.*QuantInput"):
        snn.QuantLinear(4, 2)(torch.zeros(3, 4))
    q = snn.QuantInput(4, scale=1 / 16)(torch.rand(3, 4))
    lin = snn.QuantLinear(4, 2)
    out = lin(q)
    assert isinstance(out, snn.QuantTensor) and out.kind == "acc"
    assert out.exp == q.exp + lin.wq.exp == -4 + lin.wq.exp
    with pytest.raises(ValueError, match="signed 1-bit"):
        snn.QuantInput(1, signed=True)


def _toy(n=240, f=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, f))
    y = (x[:, :f // 2].sum(1) > x[:, f // 2:].sum(1)).astype(np.int64) + \
        (x[:, 0] > 0.5).astype(np.int64)
    return x[:n * 3 // 4], y[:n * 3 // 4], x[n * 3 // 4:], y[n * 3 // 4:]


@pytest.mark.parametrize("kind", ["mlp", "mlp-learned", "cnn"])
def test_fit_trains_any_chain_and_the_export_is_exact(kind):
    """softfloor.fit: the tuned loop on a user's network (the fused step for an MLP chain, the
    layers composed otherwise), a validation split held out, the result hard and bit-exact."""
    import softfloor
    from softfloor.loop import fused, input_layer
    torch.manual_seed(0)
    data = _toy()
    if kind == "cnn":
        net = nn.Sequential(snn.QuantInput(3, shape=(1, 4, 4)), snn.QuantConv2d(1, 4, 3, 1, 3),
                            snn.QuantReLU(3, "ste"), snn.QuantMaxPool2d(2), snn.Flatten(),
                            snn.QuantLinear(16, 3, 3))
    else:
        inp = snn.QuantInput(1, thresholds="learned") if kind == "mlp-learned" \
            else snn.QuantInput(4)
        net = nn.Sequential(inp, snn.QuantLinear(16, 12, 2, batchnorm=True), snn.QuantReLU(2),
                            snn.QuantLinear(12, 3, 2))
    assert (fused(net, input_layer(net)) is None) == (kind == "cnn")
    res = softfloor.fit(net, data, epochs=3, seed=1, val=0.25)
    assert set(res.accuracy) == {"val", "test", "bit_exact"} and res.accuracy["bit_exact"]
    assert res.accuracy["test"] > 0.3 and not net.training  # 3 epochs: it runs, not a score
    assert len(res.epoch_seconds) == 3 and res.input_spec == softfloor.export(net).input

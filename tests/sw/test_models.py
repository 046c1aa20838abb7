"""softfloor.models: the flat-parameter training mode of the fused MLP op."""
import numpy as np
import pytest
import torch

from softfloor.models import QuantMLP
from softfloor.train import TrainConfig, digits_split, hard_codes, train_qat


def test_flatten_makes_views_and_unflatten_restores():
    torch.manual_seed(0)
    m = QuantMLP(batchnorm=True, weight_bits=2, act_bits=2, input_bits=2)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    flat = m.flatten_parameters()
    assert flat is not None and flat.numel() == sum(p.numel() for p in m.parameters())
    assert set(m.state_dict()) == set(before)  # the flat tensor is not registered
    with torch.no_grad():
        flat.add_(1.0)  # an in-place optimiser step reaches every parameter
    for p in m.parameters():
        assert p.data_ptr() >= flat.data_ptr()
    m.unflatten_parameters()
    for k, v in m.state_dict().items():
        if k in dict(m.named_parameters()):
            assert torch.equal(v, before[k] + 1.0), k
    with torch.no_grad():
        flat.add_(1.0)  # no longer shared
    assert torch.equal(m.linears[0].weight, before["linears.0.weight"] + 1.0)


@pytest.mark.parametrize("kw", [{"surrogate": "pact"}, {"surrogate": "dsq"},
                                {"activation": "hardtanh"}, {"scales": "free"}])
def test_flatten_refused_when_a_step_may_not_be_fused(kw):
    assert QuantMLP(**kw).flatten_parameters() is None


@pytest.mark.parametrize("per_channel", [False, True])
def test_flat_training_is_the_per_parameter_training(monkeypatch, per_channel):
    """Adam on the flat parameter is the same arithmetic as Adam per parameter: same codes
    (per-channel weight scales run the fused op too)."""
    cfg = TrainConfig(weight_bits=2, act_bits=2, surrogate="sigmoid", epochs=3,
                      per_channel=per_channel)
    assert QuantMLP(per_channel=per_channel).flatten_parameters() is not None
    split = digits_split(cfg)
    flat = hard_codes(train_qat(cfg, split).model, split.c_test)
    monkeypatch.setattr(QuantMLP, "flatten_parameters", lambda self: None)
    plain = hard_codes(train_qat(cfg, split).model, split.c_test)
    assert np.array_equal(flat, plain)


def test_flattened_model_refuses_the_composed_path():
    m = QuantMLP(surrogate="dsq")
    m.__dict__["_flat"] = torch.nn.Parameter(torch.zeros(1))  # as if flattened
    with pytest.raises(RuntimeError, match="flattened"):
        m(torch.zeros(2, 64, dtype=torch.float64))

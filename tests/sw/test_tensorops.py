"""softfloor.tensorops: the cheap forms give exactly the plain expressions' values."""
import numpy as np
import pytest
import torch

from softfloor.tensorops import pass_inside, scalar


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("value", [0.5, 1 / 3, -0.0, 0.0, 2.0 ** -7, 1e-5, -1 / 7])
def test_scalar_operand_gives_the_python_float_result(dtype, value):
    x = torch.randn(16, 8, dtype=dtype, generator=torch.Generator().manual_seed(3))
    s = scalar(value, dtype)
    assert s.dtype == dtype and s.dim() == 0
    for op in (torch.mul, torch.add, torch.sub, torch.div):
        if op is torch.div and value == 0:
            continue
        assert torch.equal(op(x, s), op(x, value))
    # the sign of zero is kept apart (x + 0.0 turns -0.0 into +0.0, x + -0.0 does not)
    z = torch.tensor([-0.0], dtype=dtype)
    assert torch.equal(torch.signbit(z + s), torch.signbit(z + value))


def test_scalar_leaves_integer_dtypes_alone_and_caches():
    assert scalar(0.5, torch.int64) == 0.5
    assert scalar(0.25, torch.float32) is scalar(0.25, torch.float32)
    assert scalar(0.0, torch.float32) is not scalar(-0.0, torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lo, hi", [(-1, 1), (0, 3), (-8, 7), (0, 1)])
def test_pass_inside_is_the_closed_range_mask(dtype, lo, hi):
    gen = torch.Generator().manual_seed(lo * 10 + hi)
    r = (hi - lo + 4) * torch.rand(40, 9, dtype=dtype, generator=gen) + lo - 2
    r[0, :4] = torch.tensor([lo, hi, lo - 0.5, hi + 0.5])  # the edges are inside, just out not
    np_t = np.float32 if dtype == torch.float32 else np.float64
    r[1, 0] = float(np.nextafter(np_t(lo), np_t(-np.inf)))
    r[1, 1] = float(np.nextafter(np_t(hi), np_t(np.inf)))
    r[2] = torch.round(r[2])
    g = torch.randn(40, 9, dtype=dtype, generator=gen)
    ref = g * ((r >= lo) & (r <= hi)).to(dtype)
    out = pass_inside(g, r, lo, hi)
    assert torch.equal(out, ref)
    assert out[0, 0] == g[0, 0] and out[0, 1] == g[0, 1] and out[1, 0] == 0 and out[1, 1] == 0


def test_pass_inside_rejects_inexact_ranges():
    with pytest.raises(ValueError, match="not exact"):
        pass_inside(torch.zeros(2), torch.zeros(2), 0, 2 ** 25 + 1)

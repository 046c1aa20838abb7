"""The golden model against an independent per-sample Python-int interpreter."""
import numpy as np
import pytest

from softfloor import arith, golden, intmodel as im
from tests.randmodel import random_codes, random_model


def interpret(model: im.IntModel, sample) -> list[int]:
    """Plain Python ints, one sample, straight from the documented semantics."""
    x = [int(v) for v in sample]
    for layer in model.layers:
        if isinstance(layer, im.Dense):
            x = [sum(int(w) * v for w, v in zip(row, x)) + int(b)
                 for row, b in zip(layer.weight, layer.bias)]
        else:
            x = [arith.requantize(v, layer.shift, layer.rounding, layer.lo, layer.hi,
                                  layer.multiplier) for v in x]
    return x


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


def test_streaming_equals_batch():
    rng = np.random.default_rng(3)
    m = random_model(rng, (16, 8, 4))
    x = random_codes(rng, m, 300)
    chunks = [x[:100], x[100:250], x[250:]]
    np.testing.assert_array_equal(np.concatenate(list(golden.iter_run(m, chunks))), golden.run(m, x))

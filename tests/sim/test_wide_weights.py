"""Weights wider than 8 bits (9..16, format version 3) through RTL generation and co-simulation.

Random dense networks and random CNNs whose every layer has ``weight_bits`` drawn from 9..16
(worst-case weight codes in some), each folding (the planner's, fully folded, a random PE x
SIMD), on both simulators: RTL == golden on every sample. Reproduce one with
``SOFTFLOOR_SEED=<seed> .venv/bin/python -m pytest tests/sim/test_wide_weights.py``.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from softfloor.intmodel import V2_WEIGHT_BITS, MAX_WEIGHT_BITS
from softfloor.sim import randnet, tools
from tests.conftest import require_tool
from tests.randcnn import random_cnn
from tests.randmodel import extreme_codes, random_codes, random_model
from tests.sim.test_randnet import random_folding

pytestmark = pytest.mark.sim

#: Seeds per simulator in ``make test``: even seeds dense, odd seeds CNNs.
SEEDS = {"icarus": range(5000, 5003), "verilator": range(5000, 5002)}


def wide_network(seed: int):
    """One random model with ``V2_WEIGHT_BITS < weight_bits <= MAX_WEIGHT_BITS`` and its inputs."""
    rng = np.random.default_rng(seed)
    wb = int(rng.integers(V2_WEIGHT_BITS + 1, MAX_WEIGHT_BITS + 1))
    if seed % 2:
        model = random_cnn(rng, weight_bits=wb, name=f"wide{seed}")
        x = random_codes(rng, model, 8)
    else:
        sizes = [int(rng.integers(2, 13)) for _ in range(int(rng.integers(2, 5)))]
        model = random_model(rng, sizes, weight_bits=wb, worst_case=seed % 4 == 0,
                             name=f"wide{seed}")
        x = np.concatenate([extreme_codes(rng, model, 6), random_codes(rng, model, 14)])
    return model, x, rng


def _cases():
    if os.environ.get("SOFTFLOOR_SEED"):
        return [(sim, int(os.environ["SOFTFLOOR_SEED"])) for sim in tools.SIMULATORS]
    return [(sim, seed) for sim in tools.SIMULATORS for seed in SEEDS[sim]]


@pytest.mark.parametrize("sim,seed", _cases())
def test_wide_weight_network_is_bit_exact(sim, seed, tmp_path):
    require_tool(sim, lambda: tools.ensure(sim))
    model, x, rng = wide_network(seed)
    assert model.required_version()[0] == 3
    assert all(lay.weight_bits > V2_WEIGHT_BITS for lay in model.layers
               if lay.op in ("dense", "conv2d"))
    folding = random_folding(model, rng, seed % 3)
    print(f"SOFTFLOOR_SEED={seed} ({sim}), folding {'planner' if folding is None else folding}"
          f"\n{model}")
    r = randnet.check_model(model, x, sim, tmp_path, seed=seed, folding=folding,
                            reproduce=f"SOFTFLOOR_SEED={seed} .venv/bin/python -m pytest "
                                      f"tests/sim/test_wide_weights.py -k {sim}")
    print(r)

"""Random valid integer networks through RTL generation and co-simulation against golden.

Every network comes from one integer seed (``tests.randmodel.random_network``). ``make test``
checks a fixed set of seeds; ``make soak`` a larger sweep from a random base seed. Reproduce any
failure with ``SOFTFLOOR_SEED=<seed> .venv/bin/python -m pytest tests/sim/test_randnet.py``.
Environment: ``SOFTFLOOR_SEED`` (one seed), ``SOFTFLOOR_RANDNET_COUNT`` / ``_BASE`` (a sweep),
``SOFTFLOOR_RANDNET_SIMS`` (comma list: which simulators the sweep uses), ``SOFTFLOOR_SOAK=1``
(bigger networks; set by ``make soak``, so reproduce a soak failure with it set too).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from softfloor.hw.generate import build_manifest
from softfloor.sim import randnet
from tests.conftest import require_tool
from softfloor.sim import tools
from tests.randcnn import random_cnn_network
from tests.randmodel import (extreme_codes, random_codes, random_mixed_network, random_network,
                             with_luts_and_argmax)

pytestmark = pytest.mark.sim
SOAK = os.environ.get("SOFTFLOOR_SOAK", "") not in ("", "0")

#: Networks per simulator in ``make test`` (Icarus builds in a second; Verilator in ~5-10 s).
DEFAULT_COUNT = {"icarus": 10, "verilator": 3}
#: Random CNNs (conv, per-channel requant, max-pool, multi-threshold, flatten, dense) per
#: simulator in ``make test`` (Verilator also runs two random CNNs in ``tests/sim/test_cosim.py``);
#: a sweep (``SOFTFLOOR_RANDNET_COUNT``) runs a third as many CNNs as dense networks, on both
#: simulators (a CNN streams whole frames: several times the cycles per sample).
CNN_COUNT = {"icarus": 3, "verilator": 1}
CNN_BASE = 1003
#: Dense networks with mixed activations (Requant / MultiThreshold / ChannelRequant), luts and
#: argmax outputs per simulator in ``make test`` (seeds 3002-3004: thresholds per feature and
#: shared, a hidden and a final ChannelRequant, luts after a requant and a ChannelRequant, an
#: argmax output); a sweep runs a third as many as plain dense networks.
MIXED_COUNT = {"icarus": 3, "verilator": 1}
MIXED_BASE = 3002


def cases(default=None, base=1000, fraction=1):
    default = default or DEFAULT_COUNT
    if os.environ.get("SOFTFLOOR_SEED"):
        seed = int(os.environ["SOFTFLOOR_SEED"])
        return [(sim, seed) for sim in tools.SIMULATORS]
    base = int(os.environ.get("SOFTFLOOR_RANDNET_BASE", base))
    sims = os.environ.get("SOFTFLOOR_RANDNET_SIMS", ",".join(tools.SIMULATORS)).split(",")
    out = []
    for sim in sims:
        if "SOFTFLOOR_RANDNET_COUNT" in os.environ:
            n = max(1, int(os.environ["SOFTFLOOR_RANDNET_COUNT"]) // fraction)
        else:
            n = default[sim]
        out += [(sim, base + k) for k in range(n)]
    return out


def random_folding(model, rng, kind: int):
    """0: the planner's choice (None); 1: fully folded ({}); 2: a random valid PE x SIMD per
    Dense and Conv2d layer (a conv's matrix is ``out_channels x in_channels*kh*kw``; drawn until
    the generator accepts the combination; the planner otherwise)."""
    if kind < 2:
        return [None, {}][kind]
    mats = [(lay.name, *np.asarray(lay.weight).reshape(len(lay.weight), -1).shape)
            for lay in model.layers if lay.op in ("dense", "conv2d")]
    for _ in range(30):
        fold = {name: (int(rng.integers(1, rows + 1)), int(rng.integers(1, cols + 1)))
                for name, rows, cols in mats}
        try:
            build_manifest(model, folding=fold)
            return fold
        except ValueError:
            continue
    return None


@pytest.mark.parametrize("sim,seed", cases())
def test_random_network(sim, seed, tmp_path):
    check_dense_network(sim, seed, tmp_path, random_network, "test_random_network")


@pytest.mark.parametrize("sim,seed", cases(MIXED_COUNT, MIXED_BASE, fraction=3))
def test_random_mixed_network(sim, seed, tmp_path):
    """A random dense network whose activations are, at random, Requant, MultiThreshold (per
    feature or shared, thresholds at and beyond the accumulator bounds) or ChannelRequant, each
    followed by a random lut or not, ending in an argmax or not
    (``tests.randmodel.random_mixed_network``)."""
    check_dense_network(sim, seed, tmp_path, random_mixed_network, "test_random_mixed_network")


def check_dense_network(sim, seed, tmp_path, generator, test):
    require_tool(sim, lambda: tools.ensure(sim))
    # make soak: deeper and wider networks, more samples.
    model = generator(seed, **(dict(max_depth=5, max_width=24, max_inputs=40) if SOAK else {}))
    rng = np.random.default_rng(seed)
    x = np.concatenate([extreme_codes(rng, model, 6),
                        random_codes(rng, model, 60 if SOAK else 14)])
    folding = random_folding(model, rng, seed % 3)
    # Odd seeds: random input gaps and output backpressure; even seeds: timing checked.
    gap, stall = (0.3, 0.4) if seed % 2 else (0.0, 0.0)
    print(f"{'SOFTFLOOR_SOAK=1 ' if SOAK else ''}SOFTFLOOR_SEED={seed} ({sim}), folding "
          f"{'planner' if folding is None else folding}\n{model}")
    r = randnet.check_model(model, x, sim, tmp_path, seed=seed, gap_prob=gap, stall_prob=stall,
                            folding=folding,
                            reproduce=f"{'SOFTFLOOR_SOAK=1 ' if SOAK else ''}SOFTFLOOR_SEED={seed} "
                                      f".venv/bin/python -m pytest tests/sim/test_randnet.py "
                                      f"-k '{test} and {sim}'")
    print(r)


@pytest.mark.parametrize("sim,seed", cases(CNN_COUNT, CNN_BASE, fraction=3))
def test_random_cnn_network(sim, seed, tmp_path):
    """A random CNN (``tests.randcnn.random_cnn_network``, with luts on its feature maps and an
    argmax output at random: ``tests.randmodel.with_luts_and_argmax``) through RTL generation
    and co-simulation: all-min / all-max / alternating frames plus random frames; folding, gaps
    and timing checks chosen by the seed as for the dense networks."""
    require_tool(sim, lambda: tools.ensure(sim))
    model = with_luts_and_argmax(random_cnn_network(seed, soak=SOAK),
                                 np.random.default_rng([seed, 2]))
    rng = np.random.default_rng(seed)
    t = model.input.code_type
    n = model.input.size
    x = np.concatenate([np.array([np.full(n, t.lo), np.full(n, t.hi), np.resize([t.lo, t.hi], n)]),
                        random_codes(rng, model, 30 if SOAK else 6)])
    folding = random_folding(model, rng, seed % 3)
    gap, stall = (0.3, 0.4) if seed % 2 else (0.0, 0.0)
    head = f"{'SOFTFLOOR_SOAK=1 ' if SOAK else ''}SOFTFLOOR_SEED={seed}"
    print(f"{head} ({sim}, cnn), folding {'planner' if folding is None else folding}\n{model}")
    r = randnet.check_model(model, x, sim, tmp_path, seed=seed, gap_prob=gap, stall_prob=stall,
                            folding=folding,
                            reproduce=f"{head} .venv/bin/python -m pytest "
                                      f"tests/sim/test_randnet.py -k 'cnn and {sim}'")
    print(r)


def test_regression_seed_1007_planner_folding_with_gaps(tmp_path):
    """Regression: with the planner's folding, 4-state Icarus read X on the first vector after a
    standalone Requant (engine1_fc0's gather was a process with If-overrides that Icarus never
    evaluated while its inputs stayed at their time-0 values); now one continuous expression."""
    require_tool("icarus", lambda: tools.ensure("icarus"))
    seed = 1007
    model = random_network(seed)
    rng = np.random.default_rng(seed)
    x = np.concatenate([extreme_codes(rng, model, 6), random_codes(rng, model, 14)])
    randnet.check_model(model, x, "icarus", tmp_path, seed=seed, gap_prob=0.3, stall_prob=0.4)

"""The Amaranth face of a constant-matrix adder graph (:class:`softfloor.hw.rtl.cmvm.AdderGraph`).

:func:`emit` is function-style: given the input values, the graph and the register placement,
it adds the adders (each a signal of its node's exact width) and the pipeline registers to a
module and returns one value per output row. Its numpy twin is
:meth:`~softfloor.hw.rtl.cmvm.AdderGraph.evaluate`; ``tests/hw/test_cmvm.py`` and
``tests/sim/test_units_cmvm.py`` check the two against each other and against ``W @ x``.

Register placement by adder depth: an adder of depth ``d`` is computed in stage
``ceil(d / levels_per_stage)``; a register closes every stage, so no path has more than
``levels_per_stage`` adders between two registers. A value read in a later stage than the one
that computed it goes through one register per stage in between; every output leaves through
the register of the last stage (``graph.stages(levels_per_stage)``). The inputs are taken as
the registered outputs of stage 0.
"""
from __future__ import annotations

from amaranth.hdl import Const, Module, Signal, Value, signed, unsigned

from softfloor.hw.rtl.cmvm import LEVELS_PER_STAGE, AdderGraph

__all__ = ["emit"]


def emit(m: Module, xs, graph: AdderGraph, *, registered: bool = True, enable=None,
         domain: str = "sync", levels_per_stage: int = LEVELS_PER_STAGE,
         name: str = "cm") -> list[Value]:
    """Add ``graph``'s logic to ``m``; return its outputs (``W @ xs``, one value per row).

    Parameters
    ----------
    m : Module
    xs : sequence of value-like
        The ``graph.n_inputs`` inputs; each must hold only codes in its ``graph.in_ranges``.
    graph : AdderGraph
    registered : bool
        ``True``: pipeline registers by depth (see the module docstring), latency
        ``graph.stages(levels_per_stage)`` cycles. ``False``: one combinational network.
    enable : value-like or None
        Clock enable of every pipeline register (``None``: always enabled).
    domain : str
        Clock domain of the registers.
    levels_per_stage : int
        Adder levels between two registers.
    name : str
        Prefix of the generated signal names.

    Returns
    -------
    list of Value
        Output ``r`` is ``sign * (node << shift)`` of ``graph.outputs[r]`` (a zero constant for
        an all-zero row); signed when it can be negative.
    """
    if len(xs) != graph.n_inputs:
        raise ValueError(f"{len(xs)} input values for a graph of {graph.n_inputs} inputs")
    if levels_per_stage < 1:
        raise ValueError(f"levels_per_stage must be >= 1, got {levels_per_stage}")
    n = graph.n_inputs

    def shape(i):
        bits, sgn = graph.shapes[i]
        return signed(bits) if sgn else unsigned(bits)

    def stage(i):
        return graph.stage_of(i, levels_per_stage) if registered else 0

    last = graph.stages(levels_per_stage) if registered else 0
    seen: dict = {}

    def value(i: int, k: int) -> Value:
        """Node ``i`` as seen by the logic of stage ``k`` (registered once per stage boundary
        crossed since the stage that computed it; an input counts as computed in stage 0 and
        already registered, so it is seen unregistered in stage 1)."""
        if (i, k) in seen:
            return seen[i, k]
        s = stage(i)
        first = s + 1 if (i < n and registered) else s
        if k <= first:
            v = Value.cast(xs[i]) if i < n else _adder(i)
        else:
            prev = value(i, k - 1)
            v = Signal(shape(i), name=f"{name}_{_label(i, n)}_s{k - 1}")
            if enable is None:
                m.d[domain] += v.eq(prev)
            else:
                with m.If(enable):
                    m.d[domain] += v.eq(prev)
        seen[i, k] = v
        return v

    def _adder(i: int) -> Value:
        ad = graph.adders[i - n]
        k = stage(i)
        a = value(ad.a, k)
        b = value(ad.b, k)
        a = a << ad.sa if ad.sa else a
        b = b << ad.sb if ad.sb else b
        # One zero LSB under both operands, dropped again: the sum Yosys sees is not the value
        # its consumers read, so alumacc cannot merge adders of one stage into a multi-operand
        # $macc (mapped to LUT full adders, about twice the cost of carry chains).
        sh = shape(i)
        s = Signal(unsigned(sh.width + 1), name=f"{name}_{_label(i, n)}")
        m.d.comb += s.eq(((a << 1) - (b << 1)) if ad.sub else ((a << 1) + (b << 1)))
        return s[1:].as_signed() if sh.signed else s[1:]

    outs = []
    for o in graph.outputs:
        if o.node is None:
            outs.append(Const(0, unsigned(1)))
            continue
        v = value(o.node, last + 1 if registered else 0)
        v = v << o.shift if o.shift else v
        outs.append(-v if o.neg else v)
    return outs


def _label(i: int, n: int) -> str:
    return f"x{i}" if i < n else f"n{i}"

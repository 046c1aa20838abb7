"""Constant matrix-vector multiplication as an adder graph with shared subexpressions.

``y = W @ x`` for a constant integer matrix ``W`` (``rows x cols``) is built from shifted
additions and subtractions only. :func:`solve` writes every weight in canonical signed digits
(:func:`softfloor.hw.primitives.csd_digits`: ``W[r, c] * x[c]`` is a sum of ``+-x[c] << k``),
then shares common subexpressions across the whole matrix: it repeatedly takes the two-term
pattern ``(x[a] << u) +- (x[b] << v)`` that occurs most often among the rows (any two columns,
or two digits of one column, at any relative shift), builds it once as an adder, and replaces
its occurrences by one term. Patterns that would push a row beyond the depth target are skipped,
so the graph stays as shallow as the plain adder trees (rounded up to whole pipeline stages).
What remains of each row is summed narrowest terms first, within the same depth. Every node
then has an exact integer value range, hence its width.

The result, :class:`AdderGraph`, is a plain data structure you can print::

    >>> print(solve([[3, 5], [7, 0]], [(0, 15), (0, 15)]))
    AdderGraph: 2 inputs, 2 outputs, 4 adders (24 adder bits), depth 2
      x0 u4 [0..15]
      x1 u4 [0..15]
      n2 = x0 - x1  s5 [-15..15] d1
      n3 = x0 + x1  u5 [0..30] d1
      n4 = n3<<2 - n2  u7 [0..120] d2
      n5 = x0<<3 - x0  u7 [0..105] d1
      y0 = n4
      y1 = n5

Its numpy twin :meth:`AdderGraph.evaluate` computes every node at its own width (wrapping like
the hardware would) and returns the outputs; it equals ``x @ W.T`` exactly. The Amaranth face
is :func:`softfloor.hw.rtl.cmvm_emit.emit`.
"""
from __future__ import annotations

import bisect
import functools
import heapq
import math
from dataclasses import dataclass, field

import numpy as np

from softfloor import arith
from softfloor.hw.rtl.primitives import csd_digits

__all__ = ["Adder", "Output", "AdderGraph", "solve", "naive", "matrix_graph", "matrix_naive",
           "term_counts", "stages_of", "LEVELS_PER_STAGE"]

#: Adder levels between two pipeline registers (the plain trees had two add levels per
#: registered level too).
LEVELS_PER_STAGE = 2


@dataclass(frozen=True)
class Adder:
    """``(v[a] << sa) + (v[b] << sb)``, or ``-`` when ``sub`` (``v``: inputs then adders)."""
    a: int
    sa: int
    b: int
    sb: int
    sub: bool


@dataclass(frozen=True)
class Output:
    """``sign * (v[node] << shift)``; ``node`` is ``None`` for an all-zero row."""
    node: int | None
    shift: int = 0
    neg: bool = False


@dataclass
class AdderGraph:
    """An adder graph: ``n_inputs`` inputs with value ranges, adders in topological order,
    one :class:`Output` per matrix row. Node ``i < n_inputs`` is input ``i``; node
    ``n_inputs + k`` is ``adders[k]``.

    Derived (computed on construction): per node its exact ``ranges`` ``(lo, hi)``,
    ``shapes`` ``(bits, signed)`` and ``depth`` (adders on the longest path from an input).
    """
    n_inputs: int
    in_ranges: list[tuple[int, int]]
    adders: list[Adder]
    outputs: list[Output]
    coeffs: np.ndarray = field(init=False, repr=False)
    ranges: list[tuple[int, int]] = field(init=False, repr=False)
    shapes: list[tuple[int, bool]] = field(init=False, repr=False)
    depth: list[int] = field(init=False, repr=False)

    def __post_init__(self):
        n = self.n_inputs
        if len(self.in_ranges) != n:
            raise ValueError(f"{len(self.in_ranges)} input ranges for {n} inputs")
        co = np.zeros((n + len(self.adders), n), dtype=object)
        co[:n, :n] = np.eye(n, dtype=np.int64).astype(object)
        depth = [0] * n
        for k, ad in enumerate(self.adders):
            i = n + k
            if not (0 <= ad.a < i and 0 <= ad.b < i) or ad.sa < 0 or ad.sb < 0:
                raise ValueError(f"adder n{i} = {self._expr(ad)}: operands must be earlier "
                                 f"nodes and shifts >= 0")
            co[i] = co[ad.a] * (1 << ad.sa) + (-1 if ad.sub else 1) * co[ad.b] * (1 << ad.sb)
            depth.append(max(depth[ad.a], depth[ad.b]) + 1)
        lo = np.array([r[0] for r in self.in_ranges], dtype=object)
        hi = np.array([r[1] for r in self.in_ranges], dtype=object)
        self.coeffs, self.depth = co, depth
        if n:   # each node is a dense row over the inputs: its bounds per input column
            nlo, nhi = arith.dense_bounds(np.array(co, dtype=object), np.zeros(len(co), object),
                                          lo, hi)
            self.ranges = [(int(a), int(b)) for a, b in zip(nlo, nhi)]
        else:
            self.ranges = [(0, 0)] * len(co)
        self.shapes = [arith.bits_for_range(*r) for r in self.ranges]
        for o in self.outputs:
            if o.node is not None and not 0 <= o.node < len(co):
                raise ValueError(f"output of unknown node {o.node}")

    # -- what it computes -----------------------------------------------------------------
    @property
    def n_nodes(self) -> int:
        return self.n_inputs + len(self.adders)

    def matrix(self) -> np.ndarray:
        """The integer matrix the graph computes (``rows x n_inputs``, int64)."""
        out = np.zeros((len(self.outputs), self.n_inputs), dtype=object)
        for r, o in enumerate(self.outputs):
            if o.node is not None:
                out[r] = self.coeffs[o.node] * ((-1 if o.neg else 1) << o.shift)
        return out.astype(np.int64)

    def output_range(self, r: int) -> tuple[int, int]:
        o = self.outputs[r]
        if o.node is None:
            return 0, 0
        lo, hi = (v << o.shift for v in self.ranges[o.node])
        return (-hi, -lo) if o.neg else (lo, hi)

    def evaluate(self, x) -> np.ndarray:
        """Numpy twin: ``(N, n_inputs)`` integer codes -> ``(N, rows)`` outputs (int64).

        Every node is computed at its own width, wrapped like a hardware adder of that width
        (two's complement when signed): with exact widths nothing wraps, and the result is
        ``x @ W.T``.
        """
        x = np.asarray(x, dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != self.n_inputs:
            raise ValueError(f"expected (N, {self.n_inputs}) inputs, got shape {x.shape}")
        vals = [x[:, i] for i in range(self.n_inputs)]
        for k, ad in enumerate(self.adders):
            a, b = vals[ad.a] << ad.sa, vals[ad.b] << ad.sb
            vals.append(arith.wrap(a - b if ad.sub else a + b, *self.shapes[self.n_inputs + k]))
        out = np.zeros((len(x), len(self.outputs)), dtype=np.int64)
        for r, o in enumerate(self.outputs):
            if o.node is not None:
                v = vals[o.node] << o.shift
                out[:, r] = -v if o.neg else v
        return out

    # -- its cost -----------------------------------------------------------------------------
    def adder_bits(self, k: int) -> int:
        """Carry-chain bits of adder ``k``: its width less the low bits that pass straight
        through from the unshifted operand (``a + (b << s)``: the low ``s`` bits are ``a``'s)."""
        ad = self.adders[k]
        bits = self.shapes[self.n_inputs + k][0]
        through = ad.sb - ad.sa if ad.sb > ad.sa else (ad.sa - ad.sb if not ad.sub else 0)
        return max(1, bits - through)

    @property
    def total_adder_bits(self) -> int:
        return sum(self.adder_bits(k) for k in range(len(self.adders)))

    @property
    def max_depth(self) -> int:
        """Adders on the longest input-to-output path."""
        return max([self.depth[o.node] for o in self.outputs if o.node is not None], default=0)

    def stages(self, levels_per_stage: int = LEVELS_PER_STAGE) -> int:
        """Registered stages when a register follows every ``levels_per_stage`` adder levels
        (at least one: the outputs are always registered)."""
        return max(1, math.ceil(self.max_depth / levels_per_stage))

    def stage_of(self, node: int, levels_per_stage: int = LEVELS_PER_STAGE) -> int:
        """The stage whose logic computes ``node`` (0: an input, already registered)."""
        return math.ceil(self.depth[node] / levels_per_stage)

    def register_bits(self, levels_per_stage: int = LEVELS_PER_STAGE) -> int:
        """Flip-flops of the pipeline registers :func:`softfloor.hw.rtl.cmvm_emit.emit` places: a
        value read ``j`` stages after the one that computed it goes through ``j`` registers
        (an input counts as computed in stage 1), every output through the last stage's."""
        last = self.stages(levels_per_stage)
        read = [0] * self.n_nodes                         # the last stage that reads a node
        for k, ad in enumerate(self.adders):
            s = self.stage_of(self.n_inputs + k, levels_per_stage)
            read[ad.a], read[ad.b] = max(read[ad.a], s), max(read[ad.b], s)
        for o in self.outputs:
            if o.node is not None:
                read[o.node] = last + 1
        return sum(max(0, read[i] - max(1, self.stage_of(i, levels_per_stage)))
                   * self.shapes[i][0] for i in range(self.n_nodes))

    # -- printing -------------------------------------------------------------------------------
    def _name(self, i: int) -> str:
        return f"x{i}" if i < self.n_inputs else f"n{i}"

    def _expr(self, ad: Adder) -> str:
        def t(i, s):
            return self._name(i) + (f"<<{s}" if s else "")
        return f"{t(ad.a, ad.sa)} {'-' if ad.sub else '+'} {t(ad.b, ad.sb)}"

    def __str__(self) -> str:
        def shape(i):
            b, s = self.shapes[i]
            lo, hi = self.ranges[i]
            return f"{'s' if s else 'u'}{b} [{lo}..{hi}]"
        lines = [f"AdderGraph: {self.n_inputs} inputs, {len(self.outputs)} outputs, "
                 f"{len(self.adders)} adders ({self.total_adder_bits} adder bits), "
                 f"depth {self.max_depth}"]
        lines += [f"  x{i} {shape(i)}" for i in range(self.n_inputs)]
        for k, ad in enumerate(self.adders):
            i = self.n_inputs + k
            lines.append(f"  {self._name(i)} = {self._expr(ad)}  {shape(i)} d{self.depth[i]}")
        for r, o in enumerate(self.outputs):
            v = "0" if o.node is None else (("-" if o.neg else "") + self._name(o.node)
                                            + (f"<<{o.shift}" if o.shift else ""))
            lines.append(f"  y{r} = {v}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# The solver

def _check(W, in_ranges) -> tuple[np.ndarray, list[tuple[int, int]]]:
    W = np.asarray(W)
    if W.ndim != 2:
        raise ValueError(f"W must be a 2-D integer matrix, got shape {W.shape}")
    if W.size and not np.issubdtype(W.dtype, np.integer):
        if not np.array_equal(W, np.round(W)):
            raise ValueError("W must hold integers")
    W = W.astype(np.int64)
    rng = [(int(lo), int(hi)) for lo, hi in in_ranges]
    if len(rng) != W.shape[1]:
        raise ValueError(f"{len(rng)} input ranges for {W.shape[1]} columns")
    for c, (lo, hi) in enumerate(rng):
        if lo > hi:
            raise ValueError(f"input {c}: empty range [{lo}, {hi}]")
    return W, rng


def _row_terms(W) -> list[dict]:
    """Per row ``{(node, shift): sign}``: one term per canonical signed digit."""
    digits = {}
    rows = []
    for row in W:
        t = {}
        for c, w in enumerate(row.tolist()):
            if w:
                if w not in digits:
                    digits[w] = csd_digits(w)
                for k, d in digits[w]:
                    t[(c, k)] = d
        rows.append(t)
    return rows


class _Builder:
    """Adders and their depths while the graph is built."""

    def __init__(self, in_ranges):
        self.n = len(in_ranges)
        self.adders: list[Adder] = []
        self.depth = [0] * self.n
        #: largest magnitude of each node (interval arithmetic: a bound, for ordering sums)
        self.mag = [max(abs(lo), abs(hi)) for lo, hi in in_ranges]

    def add(self, a, sa, b, sb, sub) -> int:
        self.adders.append(Adder(a, sa, b, sb, sub))
        self.depth.append(max(self.depth[a], self.depth[b]) + 1)
        self.mag.append((self.mag[a] << sa) + (self.mag[b] << sb))
        return self.n + len(self.adders) - 1

    def combine(self, t1, t2, positive: bool = False):
        """Sum of two signed terms ``(node, shift, sign)`` as one new adder: the new term.

        A subtraction keeps its unshifted operand as the minuend (its low bits then pass
        straight through) and gives its sign to the term; with ``positive`` the minuend is the
        positive term instead, so the result needs no negation (an output)."""
        (n1, s1, g1), (n2, s2, g2) = t1, t2
        m = min(s1, s2)
        u, v = s1 - m, s2 - m
        if g1 == g2:
            if u > v:                                  # the unshifted operand first
                n1, u, n2, v = n2, v, n1, u
            return self.add(n1, u, n2, v, False), m, g1
        if (g1 < 0) if positive else (u > 0):
            n1, u, g1, n2, v, g2 = n2, v, g2, n1, u, g1
        return self.add(n1, u, n2, v, True), m, g1


def _pair_key(t1, g1, t2, g2):
    """Canonical two-term pattern of terms ``t = (node, shift)`` with signs ``g``:
    ``(a, u, b, v, rel)`` with ``(a, u) < (b, v)``, ``min(u, v) == 0``; ``rel = g1 * g2``."""
    if t2 < t1:
        t1, g1, t2, g2 = t2, g2, t1, g1
    m = min(t1[1], t2[1])
    return (t1[0], t1[1] - m, t2[0], t2[1] - m, g1 * g2)


def solve(W, in_ranges, *, depth_slack: int = 0, share: bool = True,
          levels_per_stage: int = LEVELS_PER_STAGE, seed: int = 0) -> AdderGraph:
    """The adder graph of ``W @ x`` with shared subexpressions.

    Parameters
    ----------
    W : array_like of int, shape (rows, cols)
        The constant matrix.
    in_ranges : sequence of (lo, hi)
        Value range of each input (``cols`` pairs).
    depth_slack : int
        Adder levels allowed beyond the least depth of plain trees, rounded up to a whole
        number of stages of ``levels_per_stage`` levels (sharing deepens some rows).
    share : bool
        ``False``: no sharing (the plain trees, one adder per digit beyond the first per row).

    Returns
    -------
    AdderGraph
    """
    W, rng = _check(W, in_ranges)
    rows = _row_terms(W)
    b = _Builder(rng)
    most = max((len(t) for t in rows), default=0)
    least = (most - 1).bit_length() if most else 0
    target = least + depth_slack
    target = max(1, math.ceil(target / levels_per_stage)) * levels_per_stage
    if share:
        _share(rows, b, target, seed)
    outputs = [_sum_row(t, b, target) for t in rows]
    return AdderGraph(W.shape[1], rng, b.adders, outputs)


def matrix_graph(W, lo: int, hi: int) -> AdderGraph:
    """:func:`solve` for a matrix whose inputs all take values in ``[lo, hi]``, cached (the
    unit and the planner's estimate ask for the same graph)."""
    W = np.ascontiguousarray(np.asarray(W, dtype=np.int64))
    return _cached(W.tobytes(), W.shape, int(lo), int(hi), True)


def matrix_naive(W, lo: int, hi: int) -> AdderGraph:
    """:func:`naive` for inputs in ``[lo, hi]``, cached: the plain trees, fast on any size."""
    W = np.ascontiguousarray(np.asarray(W, dtype=np.int64))
    return _cached(W.tobytes(), W.shape, int(lo), int(hi), False)


@functools.lru_cache(maxsize=64)
def _cached(data: bytes, shape: tuple, lo: int, hi: int, share: bool) -> AdderGraph:
    W = np.frombuffer(data, dtype=np.int64).reshape(shape)
    return solve(W, [(lo, hi)] * shape[1], share=share)


def term_counts(W) -> np.ndarray:
    """Canonical-signed-digit terms per row of ``W`` (the plain trees' leaves)."""
    W = np.asarray(W, dtype=np.int64)
    vals, inv = np.unique(W, return_inverse=True)
    per = np.array([len(csd_digits(int(v))) for v in vals], dtype=np.int64)
    return per[inv.reshape(W.shape)].sum(axis=1) if W.size else np.zeros(len(W), np.int64)


def stages_of(W, levels_per_stage: int = LEVELS_PER_STAGE) -> int:
    """``solve(W, ...).stages(levels_per_stage)`` without solving (any input ranges).

    The graph's depth lies between the least depth of a plain tree of the longest row,
    ``ceil(log2(terms))`` (every substitution keeps a row's ``sum(2**depth)`` at least its
    term count), and :func:`solve`'s bound, that depth rounded up to whole stages; both give
    the same number of stages."""
    most = int(term_counts(W).max(initial=0))
    least = (most - 1).bit_length() if most else 0
    return max(1, math.ceil(least / levels_per_stage))


def naive(W, in_ranges) -> AdderGraph:
    """The plain trees: no shared subexpressions (``solve(..., share=False)``)."""
    return solve(W, in_ranges, share=False)


def _sum_row(terms: dict, b: _Builder, target: int) -> Output:
    """The sum of one row's terms: repeatedly the two of least magnitude (narrow adders), unless
    that would leave no tree within ``target`` levels; then the smallest term with the next
    one that keeps it possible (the two shallowest always do)."""
    if not terms:
        return Output(None)
    items = sorted(((b.mag[n] << s, n, s, g) for (n, s), g in terms.items()),
                   key=lambda t: (t[0], t[1], t[2]))
    weight = sum(1 << b.depth[t[1]] for t in items)
    limit = max(1 << target, weight)
    while len(items) > 1:
        pick = None
        for i in range(len(items)):
            for j in range(i + 1, len(items)):
                d1, d2 = b.depth[items[i][1]], b.depth[items[j][1]]
                w = weight - (1 << d1) - (1 << d2) + (1 << (max(d1, d2) + 1))
                if w <= limit:
                    pick = (i, j, w)
                    break
            if pick:
                break
        if pick is None:                       # only when over the target already
            by_depth = sorted(range(len(items)), key=lambda k: b.depth[items[k][1]])
            i, j = sorted(by_depth[:2])
            d1, d2 = b.depth[items[i][1]], b.depth[items[j][1]]
            pick = (i, j, weight - (1 << d1) - (1 << d2) + (1 << (max(d1, d2) + 1)))
        i, j, weight = pick
        _, n1, s1, g1 = items[i]
        _, n2, s2, g2 = items[j]
        del items[j], items[i]
        n, s, g = b.combine((n1, s1, g1), (n2, s2, g2), positive=not items)
        bisect.insort(items, (b.mag[n] << s, n, s, g), key=lambda t: (t[0], t[1], t[2]))
    _, n, s, g = items[0]
    return Output(n, s, g < 0)


def _share(rows: list[dict], b: _Builder, target: int, seed: int = 0) -> None:
    """Greedy two-term common subexpression elimination across all rows, in place.

    A row's terms of depths ``d_i`` can be summed within ``target`` levels iff
    ``sum(2**d_i) <= 2**target``; a substitution that breaks it is skipped."""
    limit = 1 << target
    weight = [sum(1 << b.depth[n] for n, _ in t) for t in rows]
    count: dict = {}
    where: dict = {}

    def bump(key, r, d):
        """Count one more (``d = 1``) or one fewer occurrence in row ``r``; ``where`` keeps
        every row that ever had one (a stale row just yields no occurrence later)."""
        c = count.get(key, 0) + d
        count[key] = c
        if d > 0:
            w = where.get(key)
            if w is None:
                where[key] = {r}
            else:
                w.add(r)
        return c

    heap = []
    for r, t in enumerate(rows):
        items = list(t.items())
        for i in range(len(items)):
            (t1, g1) = items[i]
            for j in range(i + 1, len(items)):
                (t2, g2) = items[j]
                bump(_pair_key(t1, g1, t2, g2), r, 1)
    # ties (equal counts) broken by a fixed pseudo-random order per seed (seed 0: the key's)
    def tie(key):
        return hash((seed, key)) if seed else 0

    heap = [(-c, tie(key), key) for key, c in count.items() if c >= 2]
    heapq.heapify(heap)
    # patterns with fewer than two occurrences that fit the depth target: a row's weight only
    # grows, so they stay blocked until a new term gives them another occurrence
    blocked = set()

    def remove(r, term):
        t = rows[r]
        g = t.pop(term)
        for t2, g2 in t.items():
            bump(_pair_key(term, g, t2, g2), r, -1)
        weight[r] -= 1 << b.depth[term[0]]

    def insert(r, term, g):
        t = rows[r]
        for t2, g2 in t.items():
            key = _pair_key(term, g, t2, g2)
            c = bump(key, r, 1)
            blocked.discard(key)
            if c >= 2:
                heapq.heappush(heap, (-c, tie(key), key))
        t[term] = g
        weight[r] += 1 << b.depth[term[0]]

    while heap:
        negc, _, key = heapq.heappop(heap)
        c = count.get(key, 0)
        if c < 2 or key in blocked:
            continue
        if c != -negc:
            heapq.heappush(heap, (-c, tie(key), key))
            continue
        a, u, bb, v, rel = key
        d = max(b.depth[a], b.depth[bb]) + 1
        # occurrences: rows where it fits the depth target, non-overlapping within a row
        occ = []
        for r in sorted(where.get(key, ())):
            t = rows[r]
            used = set()
            for (n1, s1), g1 in list(t.items()):
                if n1 != a or s1 < u:
                    continue
                m = s1 - u
                t2 = (bb, m + v)
                g2 = t.get(t2)
                if g2 is None or g1 * g2 != rel or (n1, s1) in used or t2 in used:
                    continue
                used.update(((n1, s1), t2))
                occ.append((r, (n1, s1), g1, t2, m))
        # depth check per row, counting every occurrence taken in it
        ok, extra = [], {}
        for o in occ:
            r, t1, g1, t2, m = o
            w = weight[r] + extra.get(r, 0) - (1 << b.depth[t1[0]]) - (1 << b.depth[t2[0]]) \
                + (1 << d)
            if w <= limit:
                extra[r] = w - weight[r]
                ok.append(o)
        if len(ok) < 2:
            blocked.add(key)
            continue
        # build it: rel < 0 with u > 0 is built as b<<v - a (the unshifted minuend)
        n, s0, g0 = b.combine((a, u, 1), (bb, v, rel))
        for r, t1, g1, t2, m in ok:
            remove(r, t1)
            remove(r, t2)
            insert(r, (n, m + s0), g1 * g0)

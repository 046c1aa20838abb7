"""Folding planner: PE x SIMD per folded layer for a device and an objective, before synthesis.

>>> from softfloor.hw import planner
>>> p = planner.plan(model, device="up5k", objective="throughput")      # doctest: +SKIP
>>> print(p)                                                            # doctest: +SKIP

A plan picks, per op that has a fold (dense and conv: ``pe`` output rows per cycle, ``simd``
input columns per cycle), the fold that balances the compute cycles ``ceil(rows/pe) *
ceil(cols/simd)`` across layers while the estimated logic, RAM and DSP fit the device.
Objectives:

* ``throughput``: the smallest initiation interval that fits (``budget`` of the logic cells, all
  RAM blocks and DSPs), then the fewest estimated logic cells;
* ``latency``: start from the throughput plan and keep unrolling the slowest layer while the
  design still fits (fully unrolled -- ``pe = rows``, ``simd = cols`` -- when the device allows).

Per-layer overrides (``{"fc1": (8, 4)}``, CLI ``--fold fc1=8x4``) are kept as given. The search
only asks the ops (:mod:`softfloor.hw.ops`) for their fold options, stream widths, cycles and
estimates; the result carries the :class:`~softfloor.hw.pipeline.Pipeline` the top is built
from. A plan is written to and read from a plan file by :mod:`softfloor.hw.planfile`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from softfloor.intmodel import IntModel
from softfloor.hw.ops import HwOp, UnsupportedLayerError, lower
from softfloor.hw.ops.dense import const_tree
from softfloor.hw.pipeline import (ADAPTER_LC_PER_BIT, Pipeline, beat_layouts,
                                   check_split_output, link_widths)
from softfloor.hw.synth import get_device

__all__ = ["LayerPlan", "Plan", "DesignDoesNotFit", "UnsupportedLayerError", "plan", "realize",
           "plan_from_pipeline", "fold_ops", "parse_fold", "link_widths", "const_tree",
           "OBJECTIVES", "DEFAULT_BUDGET", "DEFAULT_MIN_UTILISATION", "ADAPTER_LC_PER_BIT"]

OBJECTIVES = ("throughput", "latency")
#: Fraction of the device's logic cells a plan may use (RAM and DSP: all of them).
DEFAULT_BUDGET = 0.75
#: MAC-lane utilisation the throughput search aims for first (see :func:`plan`).
DEFAULT_MIN_UTILISATION = 0.9
#: Resources a plan is checked against, with their names in messages.
RESOURCES = {"lc": "logic cells", "ram": "RAM blocks", "dsp": "DSP blocks",
             "spram": "SPRAM blocks"}


def _caps(dev, budget: float) -> dict:
    """What a plan may use of ``dev``: ``budget`` of its logic cells, all its memories, DSPs."""
    return {"lc": int(dev.logic_cells * budget), "ram": dev.ram_blocks, "dsp": dev.dsp,
            "spram": dev.spram}


class DesignDoesNotFit(ValueError):
    """A plan's estimate exceeds the device budget; the message names the resource and the
    layer that uses most of it."""


@dataclass
class LayerPlan:
    """The plan of one op (printable, JSON-able via ``to_dict``)."""
    name: str
    kind: str
    rows: int
    cols: int
    pe: int
    simd: int
    cycles: int
    mac_units: int
    dsp: bool
    in_elements_per_transfer: int
    out_elements_per_transfer: int
    estimate: dict
    override: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Plan:
    """A folding plan for a model on a device, and the pipeline it builds."""
    device: str
    objective: str
    layers: list
    initiation_interval: int
    cycles_per_inference: int
    mac_units: int
    macs_per_inference: int
    estimate: dict
    budget: dict
    fits: bool
    notes: list = field(default_factory=list)
    pipeline: Pipeline | None = field(default=None, repr=False, compare=False)

    @property
    def mac_utilisation(self) -> float:
        return self.macs_per_inference / max(1, self.mac_units * self.initiation_interval)

    def folding(self) -> dict:
        """``{layer name: (pe, simd, dsp)}`` of its folded layers."""
        return {lp.name: (lp.pe, lp.simd, lp.dsp) for lp in self.layers if lp.mac_units}

    def to_dict(self) -> dict:
        return {"device": self.device, "objective": self.objective,
                "initiation_interval": self.initiation_interval,
                "cycles_per_inference": self.cycles_per_inference,
                "mac_units": self.mac_units, "macs_per_inference": self.macs_per_inference,
                "mac_utilisation": round(self.mac_utilisation, 4),
                "estimate": self.estimate, "budget": self.budget, "fits": self.fits,
                "layers": [lp.to_dict() for lp in self.layers], "notes": list(self.notes)}

    def over_budget(self) -> list[str]:
        """One phrase per resource the estimate exceeds, naming the layer that uses most."""
        dev = get_device(self.device)
        total = _caps(dev, 1.0)
        out = []
        for key, what in RESOURCES.items():
            if self.estimate.get(key, 0) <= self.budget.get(key, 0):
                continue
            top = max(self.layers, key=lambda lp: lp.estimate.get(key, 0))
            pct = round(100 * self.budget[key] / max(1, total[key]))
            cap = (f"the budget of {self.budget[key]} ({pct}% of {total[key]})"
                   if self.budget[key] < total[key] else f"the {total[key]} it has")
            fold = f", fold {top.pe}x{top.simd}" if top.mac_units else ""
            out.append(f"{self.estimate[key]} estimated {what} > {cap}, most in layer "
                       f"{top.name} ({top.estimate.get(key, 0)}{fold})")
        return out

    def check_fits(self) -> None:
        """Raise :class:`DesignDoesNotFit` (one line: resource, layer, what to do) unless the
        estimate is within the budget."""
        if self.fits:
            return
        raise DesignDoesNotFit(
            f"the design does not fit {self.device}: {'; '.join(self.over_budget())}: fold "
            f"that layer further (--fold or a --plan file), choose a larger --device, or pass "
            f"--allow-overfit to build it anyway")

    def __str__(self) -> str:
        head = (f"plan for {self.device} ({self.objective}): II {self.initiation_interval} "
                f"cycles, latency {self.cycles_per_inference} cycles, {self.mac_units} MAC lanes, "
                f"utilisation {100 * self.mac_utilisation:.1f}%")
        sp = bool(self.estimate.get("spram"))      # an SPRAM column when the plan uses SPRAM
        cols = ("layer", "rows x cols", "PE x SIMD", "cycles", "lanes", "in/out", "est LC",
                "RAM", "DSP") + (("SPRAM",) if sp else ())
        rows = [cols]
        for lp in self.layers:
            rows.append((lp.name + (" *" if lp.override else ""), f"{lp.rows}x{lp.cols}",
                         f"{lp.pe}x{lp.simd}", str(lp.cycles), str(lp.mac_units),
                         f"{lp.in_elements_per_transfer}/{lp.out_elements_per_transfer}",
                         str(lp.estimate["lc"]), str(lp.estimate["ram"]),
                         str(lp.estimate["dsp"]))
                        + ((str(lp.estimate.get("spram", 0)),) if sp else ()))
        e, b = self.estimate, self.budget
        rows.append(("total", "", "", str(self.initiation_interval), str(self.mac_units), "",
                     f"{e['lc']}/{b['lc']}", f"{e['ram']}/{b['ram']}", f"{e['dsp']}/{b['dsp']}")
                    + ((f"{e['spram']}/{b['spram']}",) if sp else ()))
        w = [max(len(r[i]) for r in rows) for i in range(len(cols))]
        lines = [head] + ["  " + "  ".join(r[i].ljust(w[i]) for i in range(len(cols)))
                          for r in rows]
        lines += [f"  note: {n}" for n in self.notes]
        if not self.fits:
            lines.append("  WARNING: the estimate exceeds the device budget")
        return "\n".join(lines)


def parse_fold(text: str) -> tuple[str, tuple[int, int]]:
    """``"fc1=8x4"`` -> ``("fc1", (8, 4))`` (the CLI's ``--fold``)."""
    try:
        name, rest = text.split("=", 1)
        pe, simd = rest.lower().split("x", 1)
        pe, simd = int(pe), int(simd)
        if not name or pe < 1 or simd < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"--fold {text!r}: expected LAYER=PExSIMD with positive integers, "
                         f"e.g. fc1=8x4") from None
    return name, (pe, simd)


# ----------------------------------------------------------------------------------------------
# Fixed folds

def fold_ops(ops: list[HwOp], folding: dict | None) -> list[HwOp]:
    """``ops`` folded as ``{layer name: (pe, simd[, dsp])}`` says (others ``1 x 1``)."""
    folding = dict(folding or {})
    names = [op.name for op in ops if op.fold is not None]
    for name in folding:
        if name not in names:
            raise ValueError(f"folding: no dense layer named {name!r} (dense layers: "
                             f"{', '.join(names)})")
    out = []
    for op in ops:
        if op.name in folding and op.fold is not None:
            f = tuple(folding[op.name])
            op = op.with_fold(int(f[0]), int(f[1])).with_dsp(bool(f[2]) if len(f) > 2
                                                               else False)
        out.append(op)
    return out


def realize(model: IntModel, folding=None, elements_per_beat=None) -> Pipeline:
    """The pipeline ``folding`` describes: a :class:`Plan` (its own pipeline when its beat
    layouts are the ones asked for, or when none are asked for: the plan's beats, which the
    latency objective may have widened), ``{layer name: (pe, simd[, dsp])}``, or ``None``
    (every folded layer ``1 x 1``). Layers without a hardware op raise
    :class:`~softfloor.hw.ops.UnsupportedLayerError` naming the layer and its op."""
    if isinstance(folding, Pipeline):
        return folding
    ops = lower(model)
    if elements_per_beat is None and isinstance(folding, Plan) and folding.pipeline is not None:
        in_l, out_l = folding.pipeline.in_layout, folding.pipeline.out_layout
    else:
        in_l, out_l = beat_layouts(model, elements_per_beat, ops)
    if isinstance(folding, Plan):
        pl = folding.pipeline
        if pl is not None and pl.model is model and pl.in_layout.to_dict() == in_l.to_dict() \
                and pl.out_layout.to_dict() == out_l.to_dict():
            return pl
        folding = folding.folding()
    elif folding is not None and not isinstance(folding, dict):
        raise TypeError(f"folding must be None, a Plan or a dict, got {type(folding).__name__}")
    return Pipeline.make(model, fold_ops(ops, folding), in_l, out_l)


def plan_from_pipeline(pipeline: Pipeline, device: str, objective: str, *,
                       budget: float = DEFAULT_BUDGET, overrides=(), notes=()) -> Plan:
    """The :class:`Plan` of a pipeline on ``device``: estimates, totals, fit, timing."""
    dev = get_device(device)
    caps = _caps(dev, budget)
    ests = [op.estimate(device) for op in pipeline.ops]
    tot = pipeline.totals(ests)
    fits = all(tot[k] <= caps[k] for k in RESOURCES)
    layers = []
    for op, est in zip(pipeline.ops, ests):
        pe, simd = op.fold or (1, 1)
        layers.append(LayerPlan(op.name, op.kind, op.rows, op.cols, pe, simd, op.plan_cycles,
                                op.mac_units, op.dsp, op.in_ept, op.out_ept, est,
                                op.fold is not None and op.name in overrides))
    return Plan(device, objective, layers, pipeline.initiation_interval,
                pipeline.cycles_per_inference, pipeline.mac_units, int(pipeline.model.macs()),
                tot, caps, fits, list(notes), pipeline)


# ----------------------------------------------------------------------------------------------
# The search

def _assign_dsp(ops: list[HwOp], dev) -> list[HwOp]:
    """DSP blocks to the ops whose products qualify, most lanes first, while they last."""
    ops = [op.with_dsp(False) for op in ops]
    left = dev.dsp
    if not left:
        return ops
    want = sorted((k for k, op in enumerate(ops) if op.dsp_lanes()),
                  key=lambda k: -ops[k].dsp_lanes())
    for k in want:
        n = ops[k].dsp_lanes()
        if n <= left:
            ops[k] = ops[k].with_dsp(True)
            left -= n
    return ops


def plan(model: IntModel, device: str = "up5k", objective: str = "throughput",
         overrides: dict | None = None, *, elements_per_beat=None,
         budget: float = DEFAULT_BUDGET,
         min_utilisation: float = DEFAULT_MIN_UTILISATION) -> Plan:
    """Choose PE x SIMD per folded layer (see the module docstring).

    Parameters
    ----------
    model : IntModel
    device : str
        A key of :data:`softfloor.hw.synth.DEVICES`.
    objective : {"throughput", "latency"}
    overrides : dict, optional
        ``{layer name: (pe, simd)}`` kept as given (the name of a dense or conv layer).
    elements_per_beat : see :class:`~softfloor.hw.top.SoftfloorTop`.
    budget : float
        Fraction of the logic cells the plan may use.
    min_utilisation : float
        The throughput search first looks for the smallest II whose MAC lanes are at least
        this busy (``macs / (mac_units * II)``); only if no such plan fits does it take the
        smallest II that fits whatever its utilisation.

    A plan that does not fit is returned with ``fits`` False and a note (the smallest legal
    design); :meth:`Plan.check_fits` turns that into an error.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
    dev = get_device(device)
    ops = lower(model)
    overrides = dict(overrides or {})
    foldable = {op.name: op for op in ops if op.fold is not None}
    for name, fold in overrides.items():
        if name not in foldable:
            raise ValueError(f"--fold {name}: no dense layer of that name (dense layers: "
                             f"{', '.join(foldable)})")
        pe, simd = fold[:2]
        op = foldable[name]
        if not (1 <= pe <= op.rows and 1 <= simd <= op.cols):
            raise ValueError(f"--fold {name}={pe}x{simd}: pe must be in 1..{op.rows} and simd "
                             f"in 1..{op.cols} for this {op.rows}x{op.cols} layer")
    in_l, out_l = beat_layouts(model, elements_per_beat, ops)
    caps = _caps(dev, budget)
    ops = [op.with_fold(*overrides[op.name][:2]) if op.name in overrides else op for op in ops]
    free = [i for i, op in enumerate(ops) if op.fold is not None and op.name not in overrides]

    beats = {"layouts": (in_l, out_l)}          # the latency objective may widen them

    def build(choice: dict, layouts=None) -> Pipeline:
        trial = [op.with_fold(*choice[i]) if i in choice else op for i, op in enumerate(ops)]
        return Pipeline.make(model, _assign_dsp(trial, dev), *(layouts or beats["layouts"]))

    def evaluate(choice: dict, layouts=None):
        try:
            pl = build(choice, layouts)
        except ValueError:
            return None
        ests = [op.estimate(device) for op in pl.ops]
        tot = pl.totals(ests)
        fits = all(tot[k] <= caps[k] for k in RESOURCES)
        return pl, tot, pl.initiation_interval, fits

    options = {}                                  # (op, wide) -> its fold options

    def tables(wide, key):
        for i in free:
            if (i, wide) not in options:
                options[i, wide] = ops[i].fold_options(device, wide)
        cands = {i: options[i, wide] for i in free}
        best_for = {}
        for i, cs in cands.items():               # best fold (by ``key``) per cycle bound
            best, table = None, []
            for c in sorted(cs, key=lambda c: c[0]):
                if best is None or key(c) < key(best):
                    best = c
                table.append((c[0], best))
            best_for[i] = table
        return cands, best_for

    # narrow: one-element streams between layers (pe <= folds); wide: any fold, wider streams.
    # Per cycle bound, the cheapest fold (estimated LC) and the fold with the fewest MAC lanes
    # (no padded lanes when pe and simd divide rows and cols: the MAC-lane utilisation).
    cheap = lambda c: (c[1], c[2] * c[3])           # noqa: E731
    lean = lambda c: (c[2] * c[3], c[1])            # noqa: E731
    fixed = [op.plan_cycles for op in ops if op.name in overrides]
    floor_ii = max(fixed + [1])
    macs = int(model.macs())

    def cheapest(table, bound):
        pick = None
        for cyc, b in table:
            if cyc > bound:
                break
            pick = b
        return pick

    def utilisation(r):
        return macs / max(1, r[0].mac_units * r[2])

    def solve():
        """The fold search over the current ``ops`` (their memories as set): (candidate folds
        per free op, (choice, evaluation) or None)."""
        _, narrow_t = tables(False, cheap)
        cands, wide_t = tables(True, cheap)
        _, narrow_l = tables(False, lean)
        _, wide_l = tables(True, lean)
        targets = sorted({c for cs in cands.values() for c, *_ in cs} | set(fixed))

        def search(pools, floor_util, need_fit=True):
            for t in targets:
                if t < floor_ii:
                    continue
                for table in pools:
                    choice = {}
                    for i in free:
                        b = cheapest(table[i], t)
                        if b is None:
                            break
                        choice[i] = (b[2], b[3])
                    else:
                        r = evaluate(choice)
                        if r and (r[3] or not need_fit) and r[2] <= t \
                                and utilisation(r) >= floor_util:
                            return choice, r
            return None

        # First the smallest II whose plan keeps >= min_utilisation of its MAC lanes busy
        # (folds that divide rows and columns, layers balanced), then, if none, the smallest
        # II that fits.
        found = (search((narrow_t, narrow_l, wide_t, wide_l), min_utilisation)
                 or search((narrow_t, wide_t), 0.0))
        return cands, found, lambda: search((narrow_t, wide_t), 0.0, need_fit=False)

    cands, result, loose = solve()
    notes = []
    if result is None and dev.spram:
        # Block RAM and logic cannot hold it: weights to SPRAM, the largest layer first, while
        # the device has SPRAM blocks and no fold fits.
        order = sorted((i for i in free if ops[i].with_spram(True).memory == "spram"),
                       key=lambda i: -ops[i].weight_bits_total)
        for i in order:
            ops[i] = ops[i].with_spram(True)
            if not ops[i].fold_options(device, True):
                ops[i] = ops[i].with_spram(False)   # no fold of it fits the SPRAM blocks
                continue
            cands, result, loose = solve()
            if result is not None:
                moved = [ops[k].name for k in order if ops[k].spram]
                notes.append(f"weights of {', '.join(moved)} in SPRAM (block RAM and logic "
                             f"cannot hold them at any fitting fold); load them through "
                             f"w_axis after reset")
                break
        else:
            for i in order:
                ops[i] = ops[i].with_spram(False)
            cands, result, loose = solve()
    if result is None:                          # nothing fits: the smallest design, flagged
        choice = {i: (1, 1) for i in free}
        r = evaluate(choice)
        if r is not None:
            result = (choice, r)
            notes.append(f"no fold fits {int(budget * 100)}% of {device}: fully folded (1x1) "
                         f"plan" if free else
                         f"the given folds do not fit {int(budget * 100)}% of {device}")
        else:                  # the given folds need wider streams than 1x1 neighbours take
            result = loose()
            if result is None:
                link_widths(_assign_dsp(ops, dev), in_l, out_l)     # raises, naming the layer
                check_split_output(ops[-1], out_l)
                raise ValueError("no fold of the free layers gives legal stream widths")
            notes.append(f"nothing fits {int(budget * 100)}% of {device} with the given folds: "
                         f"the smallest plan whose streams can carry them")
    choice, r = result
    if objective == "latency" and free:
        full = {**choice, **{i: (ops[i].rows, ops[i].cols) for i in free}}
        tr = evaluate(full)
        if tr and tr[3]:                          # fully unrolled fits: the least latency
            choice, r = full, tr
        elif elements_per_beat is None:           # wider beats may let every layer unroll
            wide = _unroll_beats(model, ops, dev, full, evaluate)
            if wide is not None and wide[1][0].cycles_per_inference < r[0].cycles_per_inference:
                beats["layouts"], (choice, r) = wide[0], (full, wide[1])
                li, lo = wide[0]
                notes.append(f"beats: {li.elements_per_beat} input elements ({li.tdata_width} "
                             f"bits) and {lo.elements_per_beat} output elements "
                             f"({lo.tdata_width} bits) per beat, the narrowest that let every "
                             f"layer unroll ({r[0].cycles_per_inference} cycles against "
                             f"{result[1][0].cycles_per_inference} at the default beats)")
    if objective == "latency":
        improved = True
        while improved:
            improved = False
            order = sorted(free, key=lambda i: -r[0].ops[i].plan_cycles)
            for i in order:
                cur = r[0].ops[i].plan_cycles
                faster = [c for c in cands[i] if c[0] < cur]
                if not faster:
                    continue
                cyc = max(c[0] for c in faster)
                pick = min((c for c in faster if c[0] == cyc), key=lambda c: c[1])
                trial_choice = {**choice, i: (pick[2], pick[3])}
                tr = evaluate(trial_choice)
                if tr and tr[3]:
                    choice, r, improved = trial_choice, tr, True
                    break
    if objective == "latency":
        notes += _not_unrolled(ops, free, choice, r, build, evaluate, caps, device)
    return plan_from_pipeline(r[0], device, objective, budget=budget,
                              overrides=set(overrides), notes=notes)


def _unroll_beats(model: IntModel, ops: list[HwOp], dev, full: dict, evaluate):
    """``((in_layout, out_layout), evaluation)`` of the beats under which the fully unrolled
    choice ``full`` is legal, fits and fits the device's I/O pins with the least latency (then
    the narrowest beats); ``None`` if there are none. Input beats: the default, powers of two
    and the whole vector; output beats: the default or every output."""
    d_in, d_out = beat_layouts(model, None, ops)
    n_in, n_out = model.input.size, model.output_size
    ins = sorted({d_in.elements_per_beat, n_in} | {1 << k for k in range(n_in.bit_length())
                                                   if d_in.elements_per_beat < 1 << k < n_in})
    best = None
    for k_in in ins:
        for k_out in sorted({d_out.elements_per_beat, n_out}):
            try:
                layouts = beat_layouts(model, (k_in, k_out), ops)
            except ValueError:
                continue
            tr = evaluate(full, layouts)
            if tr is None or not tr[3] or tr[0].io_pins > dev.io:
                continue
            key = (tr[0].cycles_per_inference, layouts[0].tdata_width + layouts[1].tdata_width)
            if best is None or key < best[0]:
                best = (key, layouts, tr)
    return None if best is None else best[1:]


def _not_unrolled(ops, free, choice, r, build, evaluate, caps, device) -> list[str]:
    """One note per free layer the latency plan leaves folded: why its full unroll was not
    taken (its streams, or the estimate over which budget)."""
    notes = []
    for i in free:
        op = r[0].ops[i]
        if op.fold == (op.rows, op.cols):
            continue
        trial = {**choice, i: (op.rows, op.cols)}
        tr = evaluate(trial)
        alone = op.with_fold(op.rows, op.cols).estimate(device)["lc"]
        if tr is None and alone > caps["lc"]:
            why = (f"unrolled it alone needs {alone} estimated logic cells > the budget of "
                   f"{caps['lc']}")
        elif tr is None:
            try:
                build(trial)
                why = "no legal stream widths"
            except ValueError as e:
                why = f"the streams cannot carry it ({e})"
        elif not tr[3]:
            over = [f"{tr[1][k]} estimated {RESOURCES[k]} > {caps[k]}" for k in RESOURCES
                    if tr[1][k] > caps[k]]
            why = "the design would not fit: " + ", ".join(over)
        elif tr[0].cycles_per_inference >= r[0].cycles_per_inference:
            why = (f"unrolling it alone gives {tr[0].cycles_per_inference} cycles, no fewer "
                   f"than {r[0].cycles_per_inference}")
        else:
            why = "the step-by-step search stopped before it (pass --fold to force it)"
        notes.append(f"{op.name} not fully unrolled ({op.rows}x{op.cols}), kept "
                     f"{op.fold[0]}x{op.fold[1]}: {why}")
    return notes

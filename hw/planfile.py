"""Plan files: the planner's choices per layer, written by ``rtl --plan-out``, read by ``--plan``.

A plan file is FINN's folding configuration for softfloor: one JSON object, its *choices* per
layer (what an engineer edits) beside a *report* (what those choices cost; written for the
reader, ignored on input and rewritten on output)::

    {
     "plan_version": 1,
     "model": "digits-mlp",
     "device": "up5k",
     "objective": "throughput",
     "layers": [
      {"name": "fc1", "kind": "dense", "pe": 5, "simd": 8, "unrolled": false, "memory": "rom",
       "dsp": false, "report": {"fused": ["fc1", "act1"], "rows": 64, "cols": 64, ...}},
      {"name": "thr2", "kind": "threshold", "memory": "logic", "report": {...}},
      ...
     ],
     "report": {"initiation_interval": 104, "cycles_per_inference": 391, "estimate": {...},
                "budget": {...}, "fits": true, ...}
    }

``layers`` has one entry per hardware op, in stream order, named and typed as the model's
(``name``, ``kind``: a plan written for another model is rejected). The choices: ``pe`` and
``simd`` (dense and conv layers: ``1 <= pe <= rows``, ``1 <= simd <= cols``), ``unrolled``
(optional; true exactly when ``pe = rows`` and ``simd = cols``), ``memory`` (where the constants
live: ``"rom"`` or ``"constants"`` for a dense or conv layer -- constants exactly when
unrolled --, or ``"spram"`` for a folded dense layer on a device with SPRAM (the UP5K; at most
16384 weight words and as many 16-bit blocks side by side as the device has), ``"logic"`` or ``"rom"`` for a lut, ``"logic"`` otherwise) and ``dsp`` (dense and
conv: build the products for DSP blocks; only products of at least 11 bits qualify). Stream
widths follow from the folds and the top's beats: ``elements_per_beat`` (``{"input": n,
"output": m}``, written when the plan's beats are not the defaults, e.g. widened by the latency
objective so that every layer unrolls; a caller's own beats take precedence). ``model`` and
``objective`` are informational; ``device`` must be the device of the run. Reading a file and writing it back gives the same file.

Every error is one line naming the file, the layer and the field (:class:`PlanFileError`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from softfloor.intmodel import IntModel, atomic_write_text
from softfloor.hw.ops import PlanEntryError, lower
from softfloor.hw.pipeline import Pipeline, beat_layouts
from softfloor.hw.planner import OBJECTIVES, Plan, plan_from_pipeline

__all__ = ["PLAN_VERSION", "PlanFileError", "plan_document", "write_plan", "read_plan",
           "parse_plan"]

#: The plan-file format this module writes and reads.
PLAN_VERSION = 1
_TOP_KEYS = {"plan_version", "model", "device", "objective", "elements_per_beat", "layers",
             "report"}


class PlanFileError(ValueError):
    """A plan file that cannot be built: the message names the file, layer and field."""


def plan_document(plan: Plan, model_name: str = "") -> dict:
    """The plan file's JSON object of ``plan`` (made by the planner or read from a file)."""
    if plan.pipeline is None:
        raise ValueError("plan_document needs a plan made by the planner or read from a file")
    layers = []
    for op, lp in zip(plan.pipeline.ops, plan.layers):
        entry = op.plan_entry()
        entry["report"] = {"fused": list(op.names), "rows": lp.rows, "cols": lp.cols,
                           "cycles": lp.cycles, "mac_units": lp.mac_units,
                           "in_elements_per_transfer": lp.in_elements_per_transfer,
                           "out_elements_per_transfer": lp.out_elements_per_transfer,
                           "estimate": dict(lp.estimate)}
        layers.append(entry)
    doc = {"plan_version": PLAN_VERSION, "model": model_name or plan.pipeline.model.name,
           "device": plan.device, "objective": plan.objective}
    pl = plan.pipeline
    beats = {"input": pl.in_layout.elements_per_beat, "output": pl.out_layout.elements_per_beat}
    d_in, d_out = beat_layouts(pl.model, None, pl.ops)
    if (beats["input"], beats["output"]) != (d_in.elements_per_beat, d_out.elements_per_beat):
        doc["elements_per_beat"] = beats
    return doc | {"layers": layers,
            "report": {"initiation_interval": plan.initiation_interval,
                       "cycles_per_inference": plan.cycles_per_inference,
                       "mac_units": plan.mac_units,
                       "macs_per_inference": plan.macs_per_inference,
                       "estimate": dict(plan.estimate), "budget": dict(plan.budget),
                       "fits": plan.fits}}


def write_plan(plan: Plan, path: str | os.PathLike) -> Path:
    """Write ``plan`` as a plan file (atomically); returns the path."""
    text = json.dumps(plan_document(plan), indent=1) + "\n"
    return atomic_write_text(Path(path), text)


def read_plan(path: str | os.PathLike, model: IntModel, device: str, *,
              elements_per_beat=None) -> Plan:
    """The :class:`Plan` a plan file describes for ``model`` on ``device`` (see the module
    docstring); a :class:`PlanFileError` naming the file, layer and field if it cannot be
    built. Fit is not checked here: :meth:`Plan.check_fits`."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: plan file not found (write one with "
                                f"`softfloor rtl --plan-out {path}`)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise PlanFileError(f"{path}: cannot read the plan file: {e}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise PlanFileError(f"{path}: not JSON ({e.msg} at line {e.lineno} column "
                            f"{e.colno})") from None
    return parse_plan(doc, model, device, where=str(path),
                      elements_per_beat=elements_per_beat)


def _fail(where: str, msg: str):
    raise PlanFileError(f"{where}: {msg}")


def parse_plan(doc, model: IntModel, device: str, *, where: str = "plan",
               elements_per_beat=None) -> Plan:
    """:func:`read_plan` on an already parsed JSON object."""
    if not isinstance(doc, dict):
        _fail(where, f"expected a JSON object with {sorted(_TOP_KEYS)}, got "
                     f"{type(doc).__name__}")
    extra = sorted(set(doc) - _TOP_KEYS)
    if extra:
        _fail(where, f"unknown key(s) {extra} (a plan file has {sorted(_TOP_KEYS)})")
    version = doc.get("plan_version")
    if version is None:
        _fail(where, "missing plan_version (this softfloor writes and reads version "
                     f"{PLAN_VERSION})")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        _fail(where, f"plan_version must be a positive integer, got {version!r}")
    if version > PLAN_VERSION:
        _fail(where, f"plan_version {version} is newer than this softfloor reads "
                     f"({PLAN_VERSION}): upgrade softfloor or re-plan with --plan-out")
    dev = doc.get("device")
    if dev != device:
        _fail(where, f"device: the plan was made for {dev!r}, but this run targets "
                     f"{device!r}: pass --device {dev} or re-plan with --plan-out")
    objective = doc.get("objective", "throughput")
    if objective not in OBJECTIVES:
        _fail(where, f"objective: {objective!r} is not one of {', '.join(OBJECTIVES)}")
    if not isinstance(doc.get("model", ""), str):
        _fail(where, "model: expected the model's name (a string)")
    if not isinstance(doc.get("report", {}), dict):
        _fail(where, "report: expected an object (it is ignored on input)")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        _fail(where, "layers: expected a list with one entry per hardware layer")
    ops = lower(model)
    if len(layers) != len(ops):
        _fail(where, f"layers: {len(layers)} entries, but the model has {len(ops)} hardware "
                     f"layers ({', '.join(op.name for op in ops)}): the plan was written for "
                     f"another model; re-plan with --plan-out")
    folded = []
    for k, (entry, op) in enumerate(zip(layers, ops)):
        if not isinstance(entry, dict):
            _fail(where, f"layers[{k}]: expected an object, got {type(entry).__name__}")
        if entry.get("name") != op.name or entry.get("kind") != op.kind:
            _fail(where, f"layers[{k}] is {entry.get('name')!r} ({entry.get('kind')}), but the "
                         f"model's hardware layer {k} is {op.name!r} ({op.kind}): the plan was "
                         f"written for another model; re-plan with --plan-out")
        at = f"{where}: layers[{k}] ({op.name})"
        allowed = set(op.plan_entry()) | {"report"}
        extra = sorted(set(entry) - allowed)
        if extra:
            _fail(at, f"unknown key(s) {extra} for a {op.kind} layer (it takes "
                      f"{sorted(allowed - {'name', 'kind'})})")
        if not isinstance(entry.get("report", {}), dict):
            _fail(at, "report: expected an object (it is ignored on input)")
        try:
            folded.append(op.apply_plan_entry(entry, at, device))
        except PlanEntryError as e:
            raise PlanFileError(str(e)) from None
    beats = doc.get("elements_per_beat")
    if beats is not None and (not isinstance(beats, dict) or set(beats) != {"input", "output"}
                              or not all(isinstance(v, int) and not isinstance(v, bool)
                                         and v >= 1 for v in beats.values())):
        _fail(where, f"elements_per_beat: expected {{\"input\": n, \"output\": m}} with "
                     f"positive integers, got {beats!r}")
    if elements_per_beat is None and beats is not None:
        elements_per_beat = (beats["input"], beats["output"])
    try:
        in_l, out_l = beat_layouts(model, elements_per_beat, ops)
    except ValueError as e:
        _fail(where, f"elements_per_beat: {e}")
    try:
        pipeline = Pipeline.make(model, folded, in_l, out_l)
    except ValueError as e:
        _fail(where, str(e))
    return plan_from_pipeline(pipeline, device, objective)

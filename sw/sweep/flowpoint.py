"""One point of a ``softfloor sweep``: a flow in its own directory, and its row from report.json.

:func:`run_flow_point` is the task the sweep runs on a worker. It makes the point's
:class:`~softfloor.flow.FlowOptions` from the point's fields (by name), runs the spec's stages
into the point's directory (the whole chain through :func:`softfloor.flow.flow`; a subset stage
by stage, then :func:`softfloor.flow.report`) and returns :func:`metrics` of its ``report.json``.

The report.json keys read (everything else stays in the point's directory):

==========================  ============================================================
column                      report.json key
==========================  ============================================================
accuracy_float, ...         ``accuracy.float``, ``.quantized``, ``.golden``, ``.rtl``
accuracy                    the first of ``accuracy.rtl``, ``.golden``, ``.quantized``
mismatches                  the sum of ``bit_exact.<simulator>.mismatches``
initiation_interval         ``hardware.initiation_interval`` (measured if simulated)
cycles_per_inference        ``hardware.cycles_per_inference``
mac_units                   ``hardware.mac_units``
inferences_per_second       ``hardware.inferences_per_second`` (Fmax / II)
logic_estimate              ``hardware.plan.estimate.lc``
device, logic_cells, ff,    ``synth.device``, ``synth.logic_cells``, ``synth.ff``,
dsp, ram_blocks, fmax_mhz   ``synth.dsp``, ``synth.ram_blocks``, ``synth.fmax_mhz``
synth_cache                 ``synth.cache`` (hit or miss)
result.timings              ``timings`` (seconds per stage)
==========================  ============================================================
"""
from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path


def flow_options(params: dict, out: Path, stages, synth_cache: str | Path | None = None):
    """The :class:`~softfloor.flow.FlowOptions` of a point (fields set by name)."""
    from softfloor.flow import FlowOptions
    opts = FlowOptions(out=Path(out), quiet=False, synth="synth" in stages,
                       synth_cache=Path(synth_cache) if synth_cache and "synth" in stages
                       else None)
    for k, v in params.items():
        setattr(opts, k, tuple(v) if isinstance(v, list) else v)
    for k in ("model", "inputs", "labels"):
        if isinstance(getattr(opts, k, None), str):
            setattr(opts, k, Path(getattr(opts, k)))
    return opts


def run_flow_point(params: dict, out: str | Path, stages=(), synth_cache=None) -> dict:
    """Run one point's stages into ``out`` (emptied first; the flow's output to ``flow.log``)
    and return its row's metrics."""
    from softfloor import flow
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "point.json").write_text(json.dumps({"params": params, "stages": list(stages)},
                                               indent=1, default=str) + "\n")
    stages = tuple(stages) or tuple(flow.STAGES)
    opts = flow_options(params, out, stages, synth_cache)
    with open(out / "flow.log", "w") as log, contextlib.redirect_stdout(log):
        chain = [s for s in flow.STAGES if s != "synth"]
        if all(s in stages for s in chain):
            rep = flow.flow(opts)
        else:
            ctx = flow.Context(opts)
            for name in stages:
                flow.run_stage(ctx, name)
            rep = flow.report(ctx)
    return metrics(rep)


def metrics(rep: dict) -> dict:
    """A row's metric columns from a report.json dict (see the module docstring)."""
    acc = rep.get("accuracy") or {}
    hw = rep.get("hardware") or {}
    sy = rep.get("synth") or {}
    be = rep.get("bit_exact") or {}
    plan = hw.get("plan") or {}
    first = next((acc[k] for k in ("rtl", "golden", "quantized") if acc.get(k) is not None), None)
    row = {
        "accuracy": first,
        **{f"accuracy_{k}": acc.get(k) for k in ("float", "quantized", "golden", "rtl")},
        "mismatches": sum(b.get("mismatches", 0) for b in be.values()) if be else None,
        "initiation_interval": hw.get("initiation_interval"),
        "cycles_per_inference": hw.get("cycles_per_inference"),
        "mac_units": hw.get("mac_units"),
        "inferences_per_second": hw.get("inferences_per_second"),
        "logic_estimate": (plan.get("estimate") or {}).get("lc"),
        "device": sy.get("device"),
        "synth_cache": sy.get("cache"),
        "timings": rep.get("timings"),
    }
    if not sy.get("skipped"):
        row.update({k: sy.get(k) for k in ("logic_cells", "ff", "dsp", "ram_blocks",
                                            "fmax_mhz")})
    return row

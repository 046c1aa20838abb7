"""``report.html``: the flow's results on one self-contained page.

Written by :func:`softfloor.flow.report` beside ``report.json``, from the same records plus the
artifacts they summarise. One file, no network: CSS inline, charts as inline SVG, no script.
Sections (each a ``<section>`` with an ``id``, in this order):

``summary``      the verdicts: RTL accuracy, bit-exact on every simulator, fits the device
``accuracy``     float, quantized, golden and RTL accuracy; the confusion matrix of the RTL's
                 (else the golden model's) classes; the training curves
``bit-exact``    per simulator: samples, mismatches, measured latency and II, build/run time
``plan``         the folding plan per layer (PE x SIMD, lanes, cycles, estimated resources)
                 with the estimate beside the synthesized totals
``resources``    each resource used / available on the device, as bars, with the estimate
``performance``  II, latency in cycles and ns, inferences/s, Fmax, MAC utilisation
``timings``      seconds per stage, simulator build and run
``provenance``   every artifact summarised: file, size, sha256, the stage that wrote it, and
                 the files its stage read, with their hashes when it read them

:func:`artifacts` is the provenance list on its own (also in ``report.json``).
"""
from __future__ import annotations

import datetime as _dt
import html
import json
from pathlib import Path

import numpy as np

from softfloor.artifacts import load_json, load_npz
from softfloor.provenance import sha256

#: Artifacts the report summarises: (file name, or ``{top}`` / ``{stage}`` pattern, the stage
#: that writes it, what it is). Missing files are left out.
ARTIFACTS = (
    ("dataset.npz", "data", "training and test split, input codes"),
    ("inputs.npz", "data", "test inputs: codes (re-made by export), real values, labels"),
    ("model.pt", "train", "trained torch model"),
    ("train.json", "train", "training configuration and accuracies"),
    ("model.intmodel.json", "export", "integer model file"),
    ("vectors.npz", "golden", "inputs, golden outputs; RTL outputs added by sim"),
    ("{top}.v", "rtl", "Verilog of the accelerator"),
    ("manifest.json", "rtl", "ports, framing, plan, cycle counts"),
    ("{top}.core", "rtl", "FuseSoC core"),
    ("synth/{top}.json", "synth", "synthesized netlist"),
    ("synth/nextpnr-report.json", "synth", "place-and-route utilisation and timing"),
    ("synth/yosys.log", "synth", "Yosys log"),
    ("synth/nextpnr.log", "synth", "nextpnr log"),
    ("stages/{stage}.json", "{stage}", "the stage's record"),
    ("report.json", "report", "this report's numbers"),
)
STAGE_ORDER = ("data", "train", "export", "golden", "rtl", "sim", "synth", "board", "timings",
               "made_from")


def artifacts(out: Path, top: str = "softfloor_top", exclude: tuple = ()) -> list[dict]:
    """Provenance of the files in ``out`` the report summarises: ``file`` (relative to
    ``out``), ``stage``, ``what``, ``bytes``, ``sha256``, ``modified`` (UTC, ISO 8601), and
    ``made_from`` (``{file: sha256}``): the files its stage read, hashed when it read them
    (``stages/made_from.json``, written by :func:`softfloor.flow.run_stage`)."""
    out = Path(out)
    rows = []
    made_from = _load_json(out / "stages" / "made_from.json")
    stages = sorted((p.stem for p in (out / "stages").glob("*.json")),
                    key=lambda s: (STAGE_ORDER.index(s) if s in STAGE_ORDER else 99, s))
    for pattern, stage, what in ARTIFACTS:
        names = ([(pattern.format(stage=s), s) for s in stages] if "{stage}" in pattern
                 else [(pattern.format(top=top), stage)])
        for name, st in names:
            p = out / name
            if name in exclude or not p.is_file():
                continue
            stat = p.stat()
            made = made_from.get(st) or {}
            rows.append({"file": name, "stage": st, "what": what, "bytes": stat.st_size,
                         "sha256": sha256(p),
                         "modified": _dt.datetime.fromtimestamp(
                             stat.st_mtime, _dt.timezone.utc).isoformat(timespec="seconds"),
                         "made_from": made if isinstance(made, dict) else {}})
    return rows


def _load_json(path: Path) -> dict:
    try:
        return load_json(path)
    except (OSError, ValueError):           # ArtifactError is a ValueError
        return {}


# ----------------------------------------------------------------------------------------------
# Small formatting helpers

def _e(x) -> str:
    return html.escape(str(x))


def _pct(v, digits: int = 2) -> str:
    return "&ndash;" if v is None else f"{100 * v:.{digits}f}&nbsp;%"


def _num(v, fmt: str = "{:,}") -> str:
    if v is None:
        return "&ndash;"
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return fmt.format(v)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _table(head: list[str], rows: list[list], cls: str = "", foot: list | None = None) -> str:
    h = "".join(f"<th>{c}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    f = "<tfoot><tr>" + "".join(f"<td>{c}</td>" for c in foot) + "</tr></tfoot>" if foot else ""
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{body}</tbody>{f}</table>'


def _badge(ok: bool | None, yes: str, no: str, unknown: str = "not measured") -> str:
    if ok is None:
        return f'<span class="badge na">{_e(unknown)}</span>'
    return f'<span class="badge {"ok" if ok else "bad"}">{_e(yes if ok else no)}</span>'


def _section(sid: str, title: str, body: str, note: str = "") -> str:
    n = f'<p class="note">{note}</p>' if note else ""
    return f'<section id="{sid}"><h2>{_e(title)}</h2>{n}{body}</section>'


# ----------------------------------------------------------------------------------------------
# Charts (inline SVG)

def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values (steps of 1, 2 or 5 times a power of ten) from ``lo`` to ``hi``."""
    span = max(hi - lo, 1e-9)
    raw = span / (n - 1)
    mag = 10 ** np.floor(np.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = np.ceil(lo / step - 1e-9) * step
    ticks = [round(float(v), 10) + 0.0 for v in np.arange(first, hi + step * 1e-6, step)]
    if ticks[-1] < hi - 1e-9:  # the axis ends on a tick
        ticks.append(round(ticks[-1] + float(step), 10))
    return ticks


def _svg_hbars(items: list[tuple[str, float, str]], vmax: float, width: int = 520,
               lo: float = 0.0, unit: str = "", bar_h: int = 22) -> str:
    """Horizontal bars: (label, value, text) each, the axis from ``lo`` to ``vmax``."""
    lab_w, pad = 150, 8
    h = len(items) * (bar_h + 6) + 26
    ticks = _nice_ticks(lo, vmax)
    vmax = ticks[-1]
    span = max(vmax - lo, 1e-9)
    inner = width - lab_w - 70
    parts = [f'<svg class="chart" viewBox="0 0 {width} {h}" width="{width}" height="{h}" '
             f'role="img">']
    for i, (label, v, text) in enumerate(items):
        y = 4 + i * (bar_h + 6)
        w = max(0.0, min(1.0, (v - lo) / span)) * inner if v is not None else 0
        parts.append(f'<text x="{lab_w - pad}" y="{y + bar_h * 0.7:.1f}" text-anchor="end">'
                     f'{_e(label)}</text>'
                     f'<rect x="{lab_w}" y="{y}" width="{inner}" height="{bar_h}" class="track"/>'
                     f'<rect x="{lab_w}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                     f'class="bar b{i % 6}"/>'
                     f'<text x="{lab_w + inner + 6}" y="{y + bar_h * 0.7:.1f}">{text}</text>')
    y = len(items) * (bar_h + 6) + 4
    for val in ticks:
        x = lab_w + inner * (val - lo) / span
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y}" y2="{y + 4}" class="axis"/>'
                     f'<text x="{x:.1f}" y="{y + 16}" text-anchor="middle" class="tick">'
                     f'{val:g}{unit}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _svg_confusion(cm: np.ndarray, size: int = 360) -> str:
    """Confusion matrix heat map: rows true class, columns predicted class, counts in cells."""
    n = cm.shape[0]
    left, top = 46, 30
    cell = (size - left) / n
    vmax = max(1, int(cm.max()))
    h = int(top + cell * n + 4)
    parts = [f'<svg class="chart" viewBox="0 0 {size + 4} {h}" width="{size + 4}" '
             f'height="{h}" role="img">',
             f'<text x="{left + cell * n / 2:.0f}" y="12" text-anchor="middle" class="axlabel">'
             f'predicted class</text>',
             f'<text x="10" y="{top + cell * n / 2:.0f}" text-anchor="middle" class="axlabel" '
             f'transform="rotate(-90 10 {top + cell * n / 2:.0f})">true class</text>']
    for j in range(n):
        parts.append(f'<text x="{left + cell * (j + 0.5):.1f}" y="{top - 4}" '
                     f'text-anchor="middle" class="tick">{j}</text>')
    for i in range(n):
        parts.append(f'<text x="{left - 6}" y="{top + cell * (i + 0.65):.1f}" text-anchor="end" '
                     f'class="tick">{i}</text>')
        for j in range(n):
            v = int(cm[i, j])
            a = v / vmax
            if i == j:
                fill = f"rgba(31,119,180,{0.12 + 0.88 * a:.3f})"
            else:
                fill = f"rgba(214,39,40,{min(1.0, 0.25 + 0.75 * a):.3f})" if v else "#fafafa"
            txt_cls = "cmw" if (i == j and a > 0.5) else "cm"
            parts.append(f'<rect x="{left + cell * j:.1f}" y="{top + cell * i:.1f}" '
                         f'width="{cell:.1f}" height="{cell:.1f}" fill="{fill}" '
                         f'stroke="#fff"><title>true {i}, predicted {j}: {v}</title></rect>')
            if v:
                parts.append(f'<text x="{left + cell * (j + 0.5):.1f}" '
                             f'y="{top + cell * (i + 0.62):.1f}" text-anchor="middle" '
                             f'class="{txt_cls}">{v}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _svg_curves(series: dict[str, list[tuple[float, float]]], ylabel: str, width: int = 420,
                height: int = 240, log: bool = False, ypct: bool = False,
                legend_low: bool = False) -> str:
    """Line chart, epoch on x; ``series`` {name: [(x, y), ...]} with a legend (top right, or
    bottom right with ``legend_low``)."""
    left, right, top, bottom = 56, 12, 12, 40
    pts = [(x, y) for s in series.values() for x, y in s if y is not None and (y > 0 or not log)]
    if not pts:
        return ""
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1 = min(xs), max(max(xs), min(xs) + 1)
    f = (lambda v: float(np.log10(v))) if log else (lambda v: float(v))
    y0, y1 = f(min(ys)), f(max(ys))
    if y1 - y0 < 1e-9:
        y0, y1 = y0 - 0.5, y1 + 0.5
    iw, ih = width - left - right, height - top - bottom

    def X(x):
        return left + (x - x0) / (x1 - x0) * iw

    def Y(y):
        return top + (1 - (f(y) - y0) / (y1 - y0)) * ih
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" role="img">',
             f'<rect x="{left}" y="{top}" width="{iw}" height="{ih}" class="plot"/>']
    ticks = ([10 ** k for k in range(int(np.floor(y0)), int(np.ceil(y1)) + 1)] if log
             else list(np.linspace(min(ys), max(ys), 5)))
    for t in ticks:
        if log and not (y0 - 1e-9 <= np.log10(t) <= y1 + 1e-9):
            continue
        lab = f"{100 * t:.0f}%" if ypct else (f"{t:g}" if log else f"{t:.3g}")
        parts.append(f'<line x1="{left}" x2="{left + iw}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" '
                     f'class="grid"/><text x="{left - 4}" y="{Y(t) + 4:.1f}" text-anchor="end" '
                     f'class="tick">{lab}</text>')
    for t in np.linspace(x0, x1, 5):
        parts.append(f'<text x="{X(t):.1f}" y="{top + ih + 14}" text-anchor="middle" '
                     f'class="tick">{t:.0f}</text>')
    parts.append(f'<text x="{left + iw / 2}" y="{height - 6}" text-anchor="middle" '
                 f'class="axlabel">epoch</text>'
                 f'<text x="12" y="{top + ih / 2}" text-anchor="middle" class="axlabel" '
                 f'transform="rotate(-90 12 {top + ih / 2})">{_e(ylabel)}</text>')
    ly = top + ih - 8 - 16 * len(series) if legend_low else top + 8
    for k, (name, s) in enumerate(series.items()):
        p = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in s if y is not None and (y > 0 or not log))
        parts.append(f'<polyline points="{p}" class="line l{k % 6}"/>'
                     f'<rect x="{left + iw - 110}" y="{ly + 16 * k}" width="14" height="3" '
                     f'class="lg l{k % 6}"/><text x="{left + iw - 92}" y="{ly + 5 + 16 * k}" '
                     f'class="tick">{_e(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


# ----------------------------------------------------------------------------------------------
# Sections

def _confusion(out: Path, model_path: Path) -> tuple[np.ndarray | None, str]:
    """Confusion matrix of the RTL's classes (first simulator with outputs), else the golden
    model's, against the labels; and what it is of."""
    try:
        inp = load_npz(out / "inputs.npz")
        vec = load_npz(out / "vectors.npz")
        if "labels" not in inp:
            return None, "no labels"
        from . import golden, intmodel
        model = intmodel.load(model_path)
        labels = inp["labels"].astype(np.int64)
        which = next((k for k in vec if k.startswith("rtl_")
                      and len(vec[k]) == len(labels)), "golden")
        pred = golden.classify(model, vec[which])
        if len(pred) != len(labels):
            return None, "outputs and labels differ in length"
    except (OSError, ValueError, KeyError) as e:
        return None, f"not available ({type(e).__name__})"
    n = int(max(labels.max(), pred.max())) + 1
    cm = np.zeros((n, n), dtype=np.int64)
    np.add.at(cm, (labels, pred), 1)
    same = ""
    if which != "golden" and "golden" in vec:
        g = golden.classify(model, vec["golden"])
        same = f"; identical to the golden model's on {int(np.sum(g == pred))}/{len(g)} samples"
    what = ("RTL on " + which[4:] if which != "golden" else "golden model") + \
        f", {len(labels)} labelled samples{same}"
    return cm, what


def _summary(rep: dict) -> str:
    acc, be, sy, hw = rep["accuracy"], rep["bit_exact"], rep["synth"], rep["hardware"]
    exact = None if not be else all(b["mismatches"] == 0 for b in be.values())
    cards = [("RTL accuracy", _pct(acc.get("rtl") if acc.get("rtl") is not None
                                   else acc.get("golden")), ""),
             ("bit-exact", _badge(exact, "yes, " + ", ".join(be) if be else "yes",
                                  "NO: " + ", ".join(k for k, b in be.items() if b["mismatches"]),
                                  "not simulated"), ""),
             (f"fits {sy.get('device', '')}", _badge(sy.get("fits"), "yes", "no",
                                                      "not synthesized"), ""),
             ("Fmax", _num(sy.get("fmax_mhz"), "{} MHz"), ""),
             ("inferences/s", _num(hw.get("inferences_per_second"), "{:,.0f}"), "")]
    cfg = rep.get("config") or {}
    desc = ""
    if cfg:
        desc = (f'{_e(cfg.get("arch", ""))} w{_e(cfg.get("weight_bits"))}'
                f'a{_e(cfg.get("act_bits"))}, input {_e(cfg.get("input_bits"))} bits, '
                f'surrogate {_e(cfg.get("surrogate"))}, {_e(cfg.get("epochs"))} epochs, '
                f'seed {_e(cfg.get("seed"))}')
    body = '<div class="cards">' + "".join(
        f'<div class="card"><div class="k">{_e(k)}</div><div class="v">{v}</div></div>'
        for k, v, _ in cards) + "</div>"
    if desc:
        body += f'<p class="note">training: {desc}</p>'
    return _section("summary", "Summary", body)


def _accuracy(rep: dict, out: Path, train_rec: dict) -> str:
    acc = rep["accuracy"]
    items = [("float", acc.get("float")), ("quantized (torch)", acc.get("quantized")),
             ("golden (integers)", acc.get("golden"))]
    items += [(f"RTL {k[4:]}", v) for k, v in acc.items() if k.startswith("rtl_")]
    if not any(k.startswith("rtl_") for k in acc):
        items.append(("RTL", acc.get("rtl")))
    vals = [v for _, v in items if v is not None]
    lo = max(0.0, np.floor(20 * min(vals)) / 20 - 0.05) if vals else 0.0
    bars = _svg_hbars([(k, 100 * v if v is not None else None,
                        _pct(v) if v is not None else "not measured") for k, v in items],
                      100.0, lo=100 * lo, unit="%")
    cm, what = _confusion(out, Path(rep.get("model") or out / "model.intmodel.json"))
    parts = [f'<div class="row"><div><h3>Test accuracy</h3>{bars}<p class="note">axis from '
             f'{100 * lo:.0f} %: the differences sit near the top.</p></div>']
    if cm is not None:
        parts.append(f'<div><h3>Confusion matrix</h3>{_svg_confusion(cm)}'
                     f'<p class="note">{_e(what)}; diagonal blue, errors red.</p></div>')
    else:
        parts.append(f'<div><h3>Confusion matrix</h3><p class="note">{_e(what)}</p></div>')
    parts.append("</div>")
    hist = train_rec.get("history") or {}
    if hist:
        loss = {k: [(h["epoch"], h["loss"]) for h in v] for k, v in hist.items()}
        tacc = {k: [(h["epoch"], h.get("acc")) for h in v] for k, v in hist.items()
                if any("acc" in h for h in v)}
        parts.append('<div class="row"><div><h3>Training loss</h3>'
                     f'{_svg_curves(loss, "cross-entropy loss (log)", log=True)}</div>')
        if tacc:
            parts.append('<div><h3>Training accuracy</h3>'
                         f'{_svg_curves(tacc, "training batches correct", ypct=True, legend_low=True)}'
                         '</div>')
        parts.append('</div><p class="note">Training accuracy is over each epoch\'s batches in '
                     'training mode (soft surrogates, augmentation); the test accuracies above '
                     'are the hard-quantized model\'s.</p>')
    return _section("accuracy", "Accuracy", "".join(parts),
                    "On the test split: the float baseline, the hard-quantized torch model, "
                    "the integer (golden) model and the RTL on each simulator.")


def _bit_exact(rep: dict) -> str:
    be = rep["bit_exact"]
    sims = rep["hardware"].get("simulators", {})
    if not be:
        return _section("bit-exact", "Bit-exactness", '<p class="note">not simulated</p>')
    rows = []
    for k, b in be.items():
        s = sims.get(k, {})
        ok = b["mismatches"] == 0
        rows.append([_e(k), f"{b['samples'] - b['mismatches']}/{b['samples']}",
                     _badge(ok, "bit-exact", f"{b['mismatches']} mismatches"),
                     _num(s.get("latency_cycles")), _num(s.get("initiation_interval")),
                     _num(s.get("build_seconds"), "{} s"), _num(s.get("run_seconds"), "{} s")])
    body = _table(["simulator", "samples equal", "verdict", "latency (cycles)",
                   "II (cycles)", "build", "run"], rows)
    for k, b in be.items():
        if b.get("mismatches"):
            first = b.get("first_mismatches", [])[:5]
            body += (f'<h3>{_e(k)}: first mismatches</h3><pre>'
                     f'{_e(json.dumps(first, indent=1))}</pre>')
            for f in ("first_bad_layer", "first_bad_instance", "diagnosis_error"):
                if b.get(f):
                    body += f'<p><b>{_e(f.replace("_", " "))}</b>: {_e(b[f])}</p>'
    return _section("bit-exact", "Bit-exactness", body,
                    "Every output code of the RTL compared with the golden integer model, "
                    "sample by sample (integers, never floats).")


def _plan(rep: dict) -> str:
    plan = rep["hardware"].get("plan")
    if not plan:
        return _section("plan", "Plan", '<p class="note">no RTL record</p>')
    sy = rep["synth"]
    rows = []
    for lp in plan.get("layers", []):
        est = lp.get("estimate", {})
        folded = lp.get("mac_units", 0) > 0
        rows.append([_e(lp["name"]) + (" *" if lp.get("override") else ""), _e(lp["kind"]),
                     f"{lp['rows']}&times;{lp['cols']}",
                     (f"{lp['pe']}&times;{lp['simd']}" + (" DSP" if lp.get("dsp") else ""))
                     if folded else '<span class="dim">&ndash;</span>',
                     _num(lp["mac_units"]), _num(lp["cycles"]),
                     f"{lp.get('in_elements_per_transfer', 1)}/"
                     f"{lp.get('out_elements_per_transfer', 1)}",
                     _num(est.get("lc")), _num(est.get("ff")), _num(est.get("ram")),
                     _num(est.get("dsp"))])
    e, b = plan.get("estimate", {}), plan.get("budget") or {}
    foot = ["<b>total</b>", "", "", "", _num(plan.get("mac_units")),
            _num(plan.get("initiation_interval")), "", _num(e.get("lc")), _num(e.get("ff")),
            _num(e.get("ram")), _num(e.get("dsp"))]
    body = _table(["layer", "kind", "rows &times; cols", "PE &times; SIMD", "lanes",
                   "cycles", "in/out", "est. LC", "est. FF", "est. RAM", "est. DSP"], rows,
                  "num", foot)

    def vs(est, got):
        if est is None or got is None:
            return _num(got)
        d = (got - est) / est * 100 if est else 0.0
        return f"{_num(got)} <span class=\"dim\">({d:+.0f}% vs estimate)</span>"
    cmp = [["<b>estimate</b>", _num(e.get("lc")), _num(e.get("ff")), _num(e.get("ram")),
            _num(e.get("dsp"))]]
    if b:
        cmp.append(["planner budget", _num(b.get("lc")), '<span class="dim">&ndash;</span>',
                    _num(b.get("ram")), _num(b.get("dsp"))])
    if not sy.get("skipped"):
        cmp.append(["<b>synthesized</b>", vs(e.get("lc"), sy.get("logic_cells")),
                    vs(e.get("ff"), sy.get("ff")), vs(e.get("ram"), sy.get("ram_blocks")),
                    vs(e.get("dsp"), sy.get("dsp"))])
    body += _table(["", "logic cells", "FF", "RAM blocks", "DSP"], cmp, "num")
    if "fits" in plan:
        body += (f"<p>estimate within the planner's budget: "
                 f"{_badge(plan['fits'], 'yes', 'no (built with --allow-overfit)')}</p>")
    notes = "".join(f"<li>{_e(n)}</li>" for n in plan.get("notes", []))
    if notes:
        body += f"<ul class=\"note\">{notes}</ul>"
    source = rep["hardware"].get("plan_file")
    return _section("plan", "Plan", body,
                    f"Folding on {_e(plan.get('device'))} for {_e(plan.get('objective'))}, "
                    + (f"from the plan file <code>{_e(source)}</code>" if source
                       else "chosen by the planner")
                    + ": each MAC engine computes PE output rows &times; SIMD input columns per "
                    "cycle; cycles per layer = ceil(rows/PE) &middot; ceil(cols/SIMD); "
                    "in/out: elements per stream transfer; * a --fold or plan-file override. "
                    f"MAC utilisation {_pct(plan.get('mac_utilisation'), 1)}.")


RESOURCES = (("logic_cells", "logic cells", "lc"), ("ff", "flip-flops", "ff"),
             ("ram_blocks", "RAM blocks", "ram"), ("spram", "SPRAM", "spram"),
             ("dsp", "DSP", "dsp"), ("io", "I/O pins", None))


def _resources(rep: dict) -> str:
    sy = rep["synth"]
    if sy.get("skipped") or not sy.get("available"):
        return _section("resources", "Resources", '<p class="note">not synthesized '
                        '(<code>softfloor synth</code>)</p>')
    est = (rep["hardware"].get("plan") or {}).get("estimate", {})
    width, lab_w, inner, bar_h = 640, 110, 360, 22
    shown = [r for r in RESOURCES                 # SPRAM only on a device that has it
             if sy.get(r[0]) is not None and sy["available"].get(r[0])]
    parts = [f'<svg class="chart" viewBox="0 0 {width} {len(shown) * 34 + 30}" '
             f'width="{width}" height="{len(shown) * 34 + 30}" role="img">']
    for i, (key, label, ekey) in enumerate(shown):
        used, avail = sy.get(key), sy["available"].get(key)
        y = 6 + i * 34
        frac = used / avail
        w = min(1.0, frac) * inner
        cls = "bad" if frac > 1 else ("warn" if frac > 0.85 else "okb")
        parts.append(f'<text x="{lab_w - 8}" y="{y + 16}" text-anchor="end">{label}</text>'
                     f'<rect x="{lab_w}" y="{y}" width="{inner}" height="{bar_h}" class="track"/>'
                     f'<rect x="{lab_w}" y="{y}" width="{w:.1f}" height="{bar_h}" '
                     f'class="{cls}"/>')
        if ekey and est.get(ekey) is not None:
            ex = lab_w + min(1.0, est[ekey] / avail) * inner
            parts.append(f'<line x1="{ex:.1f}" x2="{ex:.1f}" y1="{y - 3}" y2="{y + bar_h + 3}" '
                         f'class="est"><title>estimate {est[ekey]}</title></line>')
        parts.append(f'<text x="{lab_w + inner + 8}" y="{y + 16}">{used:,} / {avail:,} '
                     f'({100 * frac:.1f}%)</text>')
    y = len(shown) * 34 + 14
    parts.append(f'<line x1="{lab_w}" x2="{lab_w + 16}" y1="{y}" y2="{y}" class="est"/>'
                 f'<text x="{lab_w + 22}" y="{y + 4}" class="tick">planner estimate</text>'
                 f'<rect x="{lab_w + 140}" y="{y - 6}" width="14" height="12" class="okb"/>'
                 f'<text x="{lab_w + 160}" y="{y + 4}" class="tick">synthesized, used / '
                 f'available on {_e(sy["device"])}</text></svg>')
    fits = _badge(sy.get("fits"), f"fits {sy['device']}", f"does not fit {sy['device']}")
    body = f"<p>{fits}</p>" + "".join(parts)
    tools = f"tools: {_e(sy.get('tools'))}" + (f", cache {_e(sy['cache'])}" if sy.get("cache")
                                                 else "")
    return _section("resources", "Resources", body,
                    f"After place-and-route (nextpnr), against the device's budget; {tools}. "
                    "I/O counts the top's ports as synthesized out of context.")


def _performance(rep: dict) -> str:
    hw, sy = rep["hardware"], rep["synth"]
    rows = [["initiation interval", _num(hw.get("initiation_interval")) + " cycles",
             _num(hw.get("initiation_interval_expected")) + " cycles"],
            ["latency", _num(hw.get("cycles_per_inference")) + " cycles",
             _num(hw.get("cycles_per_inference_expected")) + " cycles"],
            ["latency at Fmax", _num(hw.get("latency_ns"), "{:,.0f} ns"), ""],
            ["Fmax", _num(sy.get("fmax_mhz"), "{} MHz"), ""],
            ["inferences/s (Fmax / II)", _num(hw.get("inferences_per_second"), "{:,.0f}"), ""],
            ["MAC lanes / MACs per inference",
             f"{_num(hw.get('mac_units'))} / {_num(hw.get('macs_per_inference'))}", ""]]
    body = _table(["", "measured (simulation) or derived", "planned"], rows, "num")
    return _section("performance", "Performance", body,
                    "II: cycles between successive results, streaming back to back; latency: "
                    "first input beat to last output beat of one sample.")


def _timings(rep: dict) -> str:
    t = rep.get("timings") or {}
    items = [(k, float(v), f"{float(v):.1f} s") for k, v in t.items()]
    for k, s in (rep["hardware"].get("simulators") or {}).items():
        if s.get("run_seconds") is not None:
            items.append((f"sim: {k} run", float(s["run_seconds"]),
                          f"{s['run_seconds']:.1f} s"))
    if not items:
        return _section("timings", "Timings", '<p class="note">none recorded</p>')
    vmax = max(v for _, v, _ in items) or 1.0
    return _section("timings", "Timings", _svg_hbars(items, vmax, unit=" s"),
                    "Wall time of each stage of the last run that wrote it (seconds).")


def _provenance(rows: list[dict]) -> str:
    body_rows = [[f"<code>{_e(a['file'])}</code>", _e(a["stage"]), _e(a["what"]),
                  _size(a["bytes"]),
                  f'<code title="{_e(a["sha256"])}">{_e(a["sha256"][:16])}</code>',
                  _e(a["modified"].replace("+00:00", "").replace("T", " "))] for a in rows]
    body = _table(["file", "stage", "what", "size", "sha256 (first 16)", "modified (UTC)"],
                  body_rows, "prov")
    now = {a["file"]: a["sha256"] for a in rows}
    read_rows, seen = [], set()
    order = {st: i for i, st in enumerate(STAGE_ORDER)}
    for a in sorted(rows, key=lambda a: order.get(a["stage"], len(order))):
        if a["stage"] in seen or not a["made_from"]:
            continue
        seen.add(a["stage"])
        for f, h in a["made_from"].items():
            same = now.get(f) == h
            read_rows.append([_e(a["stage"]), f"<code>{_e(f)}</code>",
                              f'<code title="{_e(h)}">{_e(h[:16])}</code>',
                              "as now" if same else '<span class="dim">changed since</span>'])
    if read_rows:
        body += "<h3>What each stage read</h3>" + _table(
            ["stage", "file", "sha256 when read", "that file today"], read_rows, "prov")
    return _section("provenance", "Provenance", body,
                    "Every artifact this page summarises, with its content hash and the stage "
                    "that wrote it (hover a hash for all 64 digits); then the files each stage "
                    "read, hashed when it read them (<code>sim</code> adds its outputs to "
                    "<code>vectors.npz</code> after reading it).")


CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
 color:#1d2330;background:#f4f5f7;margin:0}
main{max-width:1080px;margin:0 auto;padding:18px 22px 40px}
header h1{font-size:24px;margin:8px 0 2px}header p{margin:0;color:#5b6475}
section{background:#fff;border:1px solid #e1e4ea;border-radius:8px;padding:14px 18px 16px;
 margin:16px 0}
h2{font-size:19px;margin:0 0 6px}h3{font-size:15px;margin:12px 0 6px;color:#37404f}
.note{color:#5b6475;font-size:13px;margin:4px 0 8px}.dim{color:#8a92a0}
table{border-collapse:collapse;margin:8px 0;font-size:13.5px}
th,td{padding:4px 10px;border-bottom:1px solid #eceef2;text-align:left;vertical-align:top}
th{background:#f0f2f5;font-weight:600}tfoot td{border-top:2px solid #cfd4dc;font-weight:600}
table.num td{font-variant-numeric:tabular-nums}table.prov td{font-size:12.5px}
table.prov td:nth-child(4),table.prov td:nth-child(6){white-space:nowrap}
code{font:12.5px ui-monospace,"DejaVu Sans Mono",monospace}
pre{background:#f6f7f9;padding:8px;overflow:auto;font-size:12px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{flex:1 1 150px;border:1px solid #e1e4ea;border-radius:6px;padding:8px 12px}
.card .k{font-size:12.5px;color:#5b6475}.card .v{font-size:21px;font-weight:600}
.badge{display:inline-block;border-radius:4px;padding:1px 8px;font-size:13.5px;font-weight:600}
.badge.ok{background:#dff3e4;color:#1a6b32}.badge.bad{background:#fbe0e0;color:#a11d1d}
.badge.na{background:#eceef2;color:#5b6475}
.row{display:flex;flex-wrap:wrap;gap:28px;align-items:flex-start}
.row>div{flex:0 1 auto}.row .note{max-width:420px}
svg.chart{max-width:100%;height:auto;font-size:12.5px;fill:#1d2330}
svg .track{fill:#eef0f4}svg .bar{fill:#1f77b4}svg .b1{fill:#ff7f0e}svg .b2{fill:#2ca02c}
svg .b3{fill:#9467bd}svg .b4{fill:#8c564b}svg .b5{fill:#17becf}
svg .okb{fill:#2ca02c}svg .warn{fill:#ff9f1c}svg .bad{fill:#d62728}
svg .est{stroke:#1d2330;stroke-width:2.5}svg .axis{stroke:#8a92a0}
svg .tick{font-size:11.5px;fill:#5b6475}svg .axlabel{font-size:12.5px;fill:#37404f}
svg .plot{fill:#fff;stroke:#cfd4dc}svg .grid{stroke:#eceef2}
svg .line{fill:none;stroke-width:2}svg .l0{stroke:#1f77b4;fill:#1f77b4}
svg .l1{stroke:#ff7f0e;fill:#ff7f0e}svg .l2{stroke:#2ca02c;fill:#2ca02c}
svg polyline.line{fill:none}svg .cm{font-size:11px;fill:#1d2330}
svg .cmw{font-size:11px;fill:#fff}
footer{color:#8a92a0;font-size:12px;margin-top:18px}
"""


def render(rep: dict, out: Path, provenance: list[dict] | None = None) -> str:
    """The page for report ``rep`` of the flow directory ``out`` (a string of HTML)."""
    out = Path(out)
    train_rec = _load_json(out / "stages" / "train.json")
    man = _load_json(out / "manifest.json")
    name = man.get("model") or Path(rep.get("model", "model")).name
    if provenance is None:
        provenance = rep.get("artifacts") or artifacts(out, man.get("top", "softfloor_top"))
    try:
        from importlib.metadata import version
        ver = version("softfloor")
    except Exception:  # not installed (a source tree on sys.path)
        ver = "unknown"
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    sections = [_summary(rep), _accuracy(rep, out, train_rec), _bit_exact(rep), _plan(rep),
                _resources(rep), _performance(rep), _timings(rep), _provenance(provenance)]
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>softfloor report: {_e(name)}</title><style>{CSS}</style></head><body>'
            f'<main><header><h1>softfloor report: {_e(name)}</h1>'
            f'<p>{_e(out.resolve())} &middot; written {when} &middot; softfloor {_e(ver)}</p>'
            f'</header>{"".join(sections)}<footer>One self-contained file: the numbers are '
            f'those of report.json beside it.</footer></main></body></html>\n')


def write(rep: dict, out: Path, provenance: list[dict] | None = None) -> Path:
    """Write ``out/report.html`` (atomically) and return its path."""
    from .intmodel import atomic_write_text
    return atomic_write_text(Path(out) / "report.html", render(rep, out, provenance))

"""Hardware benchmark: the digits MLP folded by the planner, per bit width and device.

For the digits MLP (64-64-32-10) at w8a8, w4a4, w2a2 and w1a1 -- trained with QAT on the digits
split (``softfloor.train.train_qat``, 60 epochs; the surrogate the trainer documents for each
width: sigmoid at 4 and 8 bits, STE at 1 and 2 bits) and exported to an integer model -- on the
UP5K (w8a8's 32-bit logits in two 16-bit output beats: the default 32-bit beat needs more pins
than the UP5K SG48 has), on the HX8K (w8a8, w4a4), on an ECP5-25F (every width, throughput plan; the ECP5-45F/85F give the same plan, the
input beat being the bottleneck), and fully unrolled (``pe = rows``, ``simd = cols``: weights as
constants, see :class:`softfloor.hw.rtl.mvu.MatrixVectorUnit`) on an ECP5-85F with a 32-bit input beat
and all 10 logits in one output beat; and the digits CNN (``softfloor.cnn``: conv3x3x8 -> pool ->
conv3x3x16 -> pool -> dense, w4a4) on the UP5K and the ECP5-25F; FINN's TFC (784-64-64-64-10,
:func:`tfc_model`: random weights, w1a1, w2a2 and w4a4, on the UP5K and the ECP5-25F, both
simulators; on the UP5K w2a2 and w4a4 keep their first layer in SPRAM); and, with random weights
of their widths (:mod:`softfloor.benchmarks.workloads`, :data:`WORKLOADS`: no accuracy), FINN's
CNV at w1a1 and w2a2 on the ECP5-85F (3 frames) and a 28x28 CNN at w4a4 on the ECP5-25F (20
frames): the planner's plan (``ROWS``), then

* RTL co-simulation on Verilator (and Icarus for the unrolled rows) of the test samples:
  bit-exactness against the golden model, measured latency (an isolated sample) and measured
  initiation interval (back to back);
* Yosys + nextpnr: logic (iCE40 logic cells; ECP5 LUT4 slots, ``TRELLIS_COMB``), FF, RAM blocks
  (EBR/SPRAM; DP16KD), DSP (SB_MAC16; MULT18X18D), Fmax;
* inferences/s = Fmax / measured II, MAC-lane utilisation = macs / (mac_units x measured II),
  and the planner's logic estimate against the synthesized count.

The models, then the rows, run as the points of two sweeps (:mod:`softfloor.sweep`, a local
Ray; :data:`WORKERS` at once). Trained models are cached in ``<out>/hardware/models`` and
finished rows in
``<row dir>/row.json`` (keyed by the hash of the generated Verilog, the manifest and the sample
count), so a rerun only redoes what changed. ``SOFTFLOOR_BENCH_HW_ROWS=ecp5,hx8k`` runs only the
rows whose ``model-device-objective`` name contains one of the words.

``quick`` (``make bench`` with ``--quick``): w4a4 and w1a1 on the UP5K only, 10 epochs, 60
co-simulated samples.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

MODELS = [(8, 8), (4, 4), (2, 2), (1, 1)]
DEVICES = ("up5k",)
#: Every row of a full run: (weight bits, act bits), device, objective, unrolled[, arch].
#: The digits CNN (``softfloor.cnn``, conv/pool engines) is the ``"cnn"`` arch.
ROWS = ([((wb, ab), "up5k", "throughput", False) for wb, ab in MODELS]
        + [((4, 4), "up5k", "throughput", False, "cnn")]
        + [((8, 8), "hx8k", "throughput", False), ((4, 4), "hx8k", "throughput", False)]
        + [((wb, ab), "ecp5-25f", "throughput", False) for wb, ab in MODELS]
        + [((4, 4), "ecp5-25f", "throughput", False, "cnn")]
        + [((wb, ab), "ecp5-85f", "latency", True) for wb, ab in ((4, 4), (2, 2), (1, 1))]
        + [((wb, ab), "up5k", "throughput", False, "tfc") for wb, ab in ((1, 1), (2, 2), (4, 4))]
        + [((wb, ab), "ecp5-25f", "throughput", False, "tfc") for wb, ab in ((1, 1), (2, 2), (4, 4))]
        + [((1, 1), "ecp5-85f", "throughput", False, "cnv"),
           ((2, 2), "ecp5-85f", "throughput", False, "cnv"),
           ((4, 4), "ecp5-25f", "throughput", False, "cnn28")])
#: Workloads with random weights (:mod:`softfloor.benchmarks.workloads`; no training, no
#: accuracy): arch -> co-simulated frames (random 8-bit codes).
WORKLOADS = {"cnv": 3, "cnn28": 20}
#: Output beat of the rows whose default beat needs more pins than the device has: the
#: UP5K SG48 (39 pins) takes w8a8's 32-bit logits in two 16-bit beats.
OUTPUT_TDATA = {((8, 8), "up5k"): 16}
#: Output beat of the TFC rows on the UP5K (raw logits, 16-bit elements, in two 8-bit beats:
#: with the weight-load port of a design with SPRAM weights the 16-bit beat needs 42 pins).
TFC_OUTPUT_TDATA = 8
TARGET_UP5K_W4A4 = 200_000
#: Rows built at once (sweep workers; None: the CPUs available, at most 4).
WORKERS: int | None = None
#: Input beat of the fully unrolled rows (bits); the output beat carries all logits.
UNROLLED_IN_BEAT_BITS = 32


def model_name(wb: int, ab: int, arch: str = "mlp") -> str:
    if arch in WORKLOADS:
        return f"{arch}-w{wb}a{ab}"
    if arch == "tfc":
        return f"tfc-w{wb}a{ab}-random"
    return f"digits-w{wb}a{ab}" if arch == "mlp" else f"digits-{arch}-w{wb}a{ab}"


def _workload(wb: int, ab: int, arch: str):
    """A workload of :data:`WORKLOADS` and its frames (``c_test``; ``y_test`` None)."""
    from types import SimpleNamespace

    import numpy as np

    from softfloor.benchmarks import workloads
    model = getattr(workloads, arch)(wb, ab)
    x = np.random.default_rng(1).integers(0, 256, size=(WORKLOADS[arch], model.input.size))
    return model, SimpleNamespace(c_test=x, y_test=None)


def _memory(entry: dict) -> str:
    """Where a manifest layer entry's weights live (``rom``, ``constants``, ``spram``)."""
    return entry.get("memory") or ("constants" if entry["const_weights"] else "rom")


#: FINN's TFC topology (MNIST MLP) and the widths of its rows (random weights: MNIST training at
#: these sizes is the "your own network" workload; the layout and the timing do not depend on
#: the values).
TFC_SIZES = (784, 64, 64, 64, 10)
TFC_MODELS = ((1, 1), (2, 2), (4, 4))
#: TFC inferences/s targets on the UP5K (Fmax / II).
TARGET_UP5K_TFC = {"tfc-w1a1-random": 100_000, "tfc-w2a2-random": 25_000}
TFC_SAMPLES = 40


def tfc_model(wb: int, ab: int, seed: int = 0):
    """TFC with random ``wb``-bit weights (1 bit: {-1, +1}), biases that centre each row's
    accumulator on random inputs, ``ab``-bit unsigned activations (clamped ReLU; each shift set
    so that random inputs spread over the codes), ``ab``-bit unsigned pixels, raw logits; and
    random test codes."""
    import numpy as np

    from softfloor import arith
    from softfloor.intmodel import Dense, InputSpec, IntModel, OutputSpec, Requant
    rng = np.random.default_rng(seed + 10 * wb + ab)
    spec = InputSpec((TFC_SIZES[0],), ab, False, scale=1.0)
    t = spec.code_type
    x = rng.integers(t.lo, t.hi, size=(256, TFC_SIZES[0]), endpoint=True)
    layers = []
    n = len(TFC_SIZES) - 1
    for k in range(n):
        rows, cols = TFC_SIZES[k + 1], TFC_SIZES[k]
        if wb == 1:
            w = rng.choice([-1, 1], size=(rows, cols))
        else:
            w = rng.integers(*arith.code_range(wb, True), size=(rows, cols), endpoint=True)
        w = w.astype(np.int64)
        b = -np.median(x @ w.T, axis=0).round().astype(np.int64)     # centred accumulators
        bb = arith.bits_for_range(min(int(b.min()), -1), max(int(b.max()), 0))[0]
        lo, hi = arith.dense_bounds(w, b, t.lo, t.hi)
        acc = arith.bits_for_range(min(int(lo.min()), -1), max(int(hi.max()), 0))[0]
        d = Dense(f"fc{k}", w, b, wb, bb, acc)
        layers.append(d)
        x = d.execute(x)
        t = d.out_type(t)
        if k < n - 1:
            top = (1 << ab) - 1
            spread = max(1, int(np.percentile(np.abs(x), 90)))
            shift = max(0, spread.bit_length() - ab)
            rq = Requant(f"act{k}", shift, "half_up", ab, False, 0, top, 1)
            layers.append(rq)
            x = rq.execute(x)
            t = rq.out_type(t)
    model = IntModel(spec, layers, OutputSpec(1.0), f"tfc-w{wb}a{ab}-random")
    codes = rng.integers(0, (1 << ab) - 1, size=(TFC_SAMPLES, TFC_SIZES[0]), endpoint=True)
    return model, codes


def _train(wb: int, ab: int, epochs: int, cache: Path | None = None, arch: str = "mlp"):
    if arch in WORKLOADS:
        return _workload(wb, ab, arch)
    from softfloor import intmodel, train
    from softfloor.nn import exporter as export
    cfg = train.TrainConfig(arch=arch, weight_bits=wb, act_bits=ab, epochs=epochs,
                            surrogate="ste" if min(wb, ab) <= 2 else "sigmoid")
    split = train.digits_split(cfg)
    quant = "" if cfg.input_quantizer == "global" else f"-{cfg.input_quantizer}"
    path = cache / f"{model_name(wb, ab, arch)}{quant}-e{epochs}.intmodel.json" if cache else None
    if path is not None and path.exists():
        model = intmodel.load(path)
        return model, split.requantized(model.input)  # the codes of its (learned) quantizer
    res = train.train_qat(cfg, split)
    model = export.export_result(res, name=model_name(wb, ab, arch))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        intmodel.save(model, path)
    return model, train.result_split(res, split)


def unrolled_folding(model) -> dict:
    """``{dense layer: (rows, cols)}``: every dense layer fully unrolled."""
    from softfloor.intmodel import Dense
    return {l.name: (l.out_features, l.in_features) for l in model.layers if isinstance(l, Dense)}


def unrolled_beats(model) -> tuple[int, int]:
    """Elements per beat of an unrolled row: a 32-bit input beat, every logit in one beat."""
    return max(1, UNROLLED_IN_BEAT_BITS // model.input.bits), model.output_size


def _row(model, split, device: str, out: Path, n_samples: int, objective: str = "throughput",
         unrolled: bool = False) -> dict:
    import hashlib
    import numpy as np
    from softfloor import golden
    from softfloor.hw import planner, synth
    from softfloor.hw.generate import generate
    from softfloor.sim import cosim
    t0 = time.monotonic()
    epb = unrolled_beats(model) if unrolled else None
    otw = next((v for (m, d), v in OUTPUT_TDATA.items()
                if d == device and model.name == f"digits-w{m[0]}a{m[1]}"), None)
    tfc = model.name.startswith("tfc-")
    if tfc:
        otw = TFC_OUTPUT_TDATA
    if otw:
        epb = {"output_tdata_width": otw}
    plan = planner.plan(model, device, objective,
                        unrolled_folding(model) if unrolled else None, elements_per_beat=epb)
    if not plan.fits:                        # reported, not synthesized (hours, then no fit)
        return {"model": model.name, "device": device, "objective": objective,
                "plan": " ".join(f"{l.name}:{l.pe}x{l.simd}" for l in plan.layers),
                "unrolled": unrolled, "mac_units": plan.mac_units,
                "ii_planned": plan.initiation_interval,
                "latency_planned": plan.cycles_per_inference, "est_lc": plan.estimate["lc"],
                "error": f"not built: the estimate ({plan.estimate['lc']} logic) exceeds "
                         f"{plan.budget['lc']} ({int(100 * planner.DEFAULT_BUDGET)}% of "
                         f"{device})"}
    gen = generate(model, out, device=device, folding=plan, elements_per_beat=epb)
    man = gen.manifest
    gen_s = time.monotonic() - t0
    key = hashlib.sha256(gen.verilog.read_bytes() + json.dumps(man, sort_keys=True).encode()
                         + str(n_samples).encode()).hexdigest()
    cached = out / "row.json"
    if cached.exists():
        row = json.loads(cached.read_text())
        if row.get("key") == key:
            return row | {"cached": True}
    x = split.c_test[:n_samples]
    want = golden.run(model, x)
    sims = ("verilator", "icarus") if unrolled or tfc else ("verilator",)
    mism, results = 0, {}
    for sim in sims:
        r = cosim.cosimulate(gen.verilog, man, x, sim, out / "cosim", expected=want)
        results[sim] = r
        mism += int(np.sum(np.any(r.outputs != want, axis=1))) + abs(len(want) - len(r.outputs))
    r = results["verilator"]
    acc = (None if split.y_test is None      # random weights (TFC rows): no accuracy
           else float(np.mean(np.argmax(r.outputs, 1) == split.y_test[:len(r.outputs)])))
    dev = synth.get_device(device)
    if man["io_pins"] > dev.io:
        raise ValueError(f"the top needs {man['io_pins']} I/O pins, {device} has {dev.io} "
                         f"(output elements of {man['output']['element_bits']} bits)")
    t1 = time.monotonic()
    s = synth.synthesize(gen.verilog, man["top"], out / "synth", device)
    synth_s = time.monotonic() - t1
    ii = r.initiation_interval
    ips = s.fmax_mhz * 1e6 / ii if s.fmax_mhz and ii else None
    est = man["resources_estimate"]
    row = {
        "model": model.name, "device": device, "objective": objective,
        "plan": " ".join(f"{l['name']}:{l['pe']}x{l['simd']}" for l in man["layers"]),
        "unrolled": unrolled, "mac_units": man["mac_units"],
        "lc": s.logic_cells, "lc_pct": round(100 * s.logic_cells / dev.logic_cells, 1),
        "ff": s.ff, "ram": s.ram_blocks, "dsp": s.dsp, "fmax_mhz": s.fmax_mhz,
        "ii_planned": man["initiation_interval"], "ii_measured": ii,
        "latency_planned": man["cycles_per_inference"], "latency_measured": r.latency_cycles,
        "latency_ns": round(1e3 * r.latency_cycles / s.fmax_mhz, 1)
        if s.fmax_mhz and r.latency_cycles else None,
        "inferences_per_s": round(ips) if ips else None,
        "mac_util": round(man["macs_per_inference"] / (man["mac_units"] * ii), 3) if ii else None,
        "est_lc": est["lc"], "est_over_actual_lc": round(est["lc"] / s.logic_cells, 2),
        "est_ram": est["ram"], "spram": s.spram, "est_spram": est.get("spram", 0),
        "memories": " ".join(f"{e['name']}:{_memory(e)}" for e in man["layers"]
                             if "const_weights" in e),
        "samples": len(x), "simulators": "+".join(sims),
        "mismatches": mism, "accuracy_rtl": acc,
        "io_pins": man["io_pins"], "out_beat": f"{man['output']['tdata_width']}b x "
        f"{man['output']['beats_per_sample']}", "tools": s.tools, "generate_s": round(gen_s, 1),
        "synth_pnr_s": round(synth_s, 1), "seconds": round(time.monotonic() - t0, 1),
    }
    if unrolled or tfc:
        for sim, rs in results.items():
            row[f"ii_measured_{sim}"] = rs.initiation_interval
            row[f"latency_measured_{sim}"] = rs.latency_cycles
    cached.write_text(json.dumps(row | {"key": key}, indent=1) + "\n")
    return row


def _job(job: tuple[str, dict]) -> dict:
    """A sweep point: train (or load) one model, or build and measure one row."""
    kind, p = job
    if p["arch"] == "tfc":                      # random weights, random codes, no labels
        from types import SimpleNamespace
        model, codes = tfc_model(p["wb"], p["ab"])
        split = SimpleNamespace(c_test=codes, y_test=None)
    else:
        model, split = _train(p["wb"], p["ab"], p["epochs"], Path(p["cache"]), p["arch"])
    if kind == "model":
        return {"model": model.name}
    return _row(model, split, p["device"], Path(p["dir"]), p["n"], p["objective"],
                p["unrolled"])


def row_name(wb: int, ab: int, device: str, objective: str, unrolled: bool,
             arch: str = "mlp") -> str:
    return (("" if arch == "mlp" else f"{arch}-") + f"w{wb}a{ab}-{device}"
            + ("-unrolled" if unrolled else "" if objective == "throughput" else f"-{objective}"))


def run(out_dir: Path, quick: bool) -> dict:
    import os

    from softfloor.benchmarks.sweeprun import run_jobs
    from softfloor.sweep.engine import local_cpus
    out = Path(out_dir) / "hardware"
    out.mkdir(parents=True, exist_ok=True)
    if quick:
        jobs = [((4, 4), "up5k", "throughput", False), ((1, 1), "up5k", "throughput", False)]
    else:
        jobs = list(ROWS)
    only = [w for w in os.environ.get("SOFTFLOOR_BENCH_HW_ROWS", "").split(",") if w]
    if only:
        jobs = [j for j in jobs if any(w in row_name(*j[0], *j[1:]) for w in only)]
    epochs, n = (10, 60) if quick else (60, 360)
    rows, notes = [], []
    jobs = [j if len(j) == 5 else (*j, "mlp") for j in jobs]
    # Two sweeps (softfloor.sweep): the models, then the rows (each loads its cached model).
    models = {(wb, ab, arch): ("model", {"wb": wb, "ab": ab, "arch": arch, "epochs": epochs,
                                         "cache": str(out / "models")})
              for (wb, ab), *_, arch in jobs}
    rowjobs = {(wb, ab, device, objective, unrolled, arch): ("row", {
        "wb": wb, "ab": ab, "arch": arch, "epochs": epochs, "cache": str(out / "models"),
        "device": device, "objective": objective, "unrolled": unrolled,
        "n": min(n, WORKLOADS.get(arch, n)),
        "dir": str(out / row_name(wb, ab, device, objective, unrolled, arch))})
        for (wb, ab), device, objective, unrolled, arch in jobs}
    workers = WORKERS or max(1, min(local_cpus(), 4))
    run_jobs(models, _job, out / "models-sweep.sqlite", min(workers, len(models)))  # errors:
    # the rows that need a model that failed to train fail with the same error
    done, errors = run_jobs(rowjobs, _job, out / "rows-sweep.sqlite", min(workers, len(rowjobs)))
    for key in rowjobs:
        wb, ab, device, objective, unrolled, arch = key
        row = done.get(key) or {                # a failed row is reported, not hidden
            "model": model_name(wb, ab, arch), "device": device, "objective": objective,
            "unrolled": unrolled, "error": errors[key]}
        row.pop("key", None)
        rows.append(row)
        print(json.dumps(row), flush=True)
    for r in rows:
        if r.get("model") == "digits-w4a4" and r.get("device") == "up5k" and "lc_pct" in r:
            ok = (r["lc_pct"] <= 90 and (r["inferences_per_s"] or 0) >= TARGET_UP5K_W4A4
                  and r["mismatches"] == 0)
            notes.append(f"target (digits w4a4 on UP5K: <= 90% LC, >= {TARGET_UP5K_W4A4:,} "
                         f"inferences/s, bit-exact): {'met' if ok else 'NOT met'} -- "
                         f"{r['lc_pct']}% LC, {r['inferences_per_s']} inferences/s, "
                         f"{r['mismatches']} mismatches")
    for r in rows:
        goal = TARGET_UP5K_TFC.get(r.get("model")) if r.get("device") == "up5k" else None
        if goal and "lc_pct" in r:
            ok = (r["lc_pct"] <= 90 and (r["inferences_per_s"] or 0) >= goal
                  and r["mismatches"] == 0 and r["ii_measured"] == r["ii_planned"])
            notes.append(f"target ({r['model']} on UP5K: <= 90% LC, >= {goal:,} inferences/s, "
                         f"bit-exact on {r['simulators']}, measured II = formula): "
                         f"{'met' if ok else 'NOT met'} -- {r['lc_pct']}% LC, {r['ram']} RAM, "
                         f"{r['spram']} SPRAM, {r['inferences_per_s']} inferences/s, "
                         f"{r['mismatches']} mismatches, II {r['ii_measured']}")
    ratios = [r["est_over_actual_lc"] for r in rows if "est_over_actual_lc" in r]
    if ratios:
        notes.append(f"planner LC estimate / synthesized: {min(ratios)}..{max(ratios)} "
                     f"(goal 0.75..1.25)")
    for r in rows:
        if r.get("unrolled") and "latency_measured" in r:
            same = all(r.get(f"latency_measured_{s}") == r["latency_planned"]
                       for s in r["simulators"].split("+"))
            notes.append(f"fully unrolled {r['model']} on {r['device']}: latency "
                         f"{r['latency_measured']} cycles measured on {r['simulators']} "
                         f"({'equals' if same else 'DIFFERS from'} the manifest's "
                         f"{r['latency_planned']}), {r['latency_ns']} ns at {r['fmax_mhz']} MHz, "
                         f"{r['lc']} LUT4, {r['mismatches']} mismatches")
    notes.append(f"models trained with QAT ({epochs} epochs), {n} test samples co-simulated "
                 "on Verilator (unrolled rows: Verilator and Icarus); Fmax from nextpnr (seed 1, "
                 "48 MHz target, timing allowed to fail); II and latency measured in RTL "
                 "simulation; ECP5 `lc` = LUT4 slots (TRELLIS_COMB), iCE40 `lc` = logic cells")
    return {"rows": rows, "notes": notes}

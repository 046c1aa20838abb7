"""Where did the RTL go wrong? First mismatching layer, element, expected vs got, and a waveform.

When a co-simulation's outputs differ from the golden model, :func:`diagnose` re-runs the stream
up to the first mismatching sample with a probe on the output stream of every engine
(``<instance>.o__valid/o__ready/o__payload``) and a waveform dump, then compares each engine's
recorded outputs with the golden model's intermediate codes
(``softfloor.golden.run(model, x, intermediates=True)``) in stream order. The first engine whose
output differs for the first bad sample is *the first bad layer*.

An engine may fuse several model layers (a Dense and the Requant after it): the probe sees the
output of the engine's last fused layer, so ``layer`` names that one and ``fused`` lists them all
(a wrong weight in ``fc1`` shows as ``layer="rq1", fused=["fc1", "rq1"]``, element = the row).

>>> d = diagnose(model, manifest, verilog, inputs, expected, rtl_outputs, "icarus", "build/x")
>>> print(d)                                                                 # doctest: +SKIP
sample 3: output element 1 expected 5 got 4
first bad layer: rq0 (engine engine0_fc0 = fc0+rq0), element 7: expected 3, got 2
waveform: build/x/diagnose/icarus/softfloor_top.fst
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from softfloor import golden
from softfloor.intmodel import IntModel

__all__ = ["probe_specs", "stream_order", "first_bad_layer", "diagnose", "Diagnosis", "first_mismatch"]


def probe_specs(manifest: dict, model: IntModel) -> list[dict]:
    """One probe per engine of the generated top, from the manifest (with fallbacks).

    Uses ``layers[i]["instance"]``, ``out_elements_per_transfer``, ``out_element_bits`` and
    ``out_signed`` when the manifest has them; otherwise instance ``engine{i}_{name}``, one
    element per transfer, and the width/signedness of the golden code type after the engine's
    last fused layer. ``golden_index`` is the index (in ``model.layers``) of that layer.
    """
    names = [layer.name for layer in model.layers]
    types = model.types()                       # types[k] = input type of layer k; [-1] = output
    specs = []
    for i, entry in enumerate(manifest["layers"]):
        last = entry.get("fused", [entry["name"]])[-1]
        if last not in names:
            raise ValueError(f"manifest layer {entry['name']!r} fuses {last!r}, which is not a "
                             f"layer of model {model.name!r}: is this manifest from this model?")
        k = names.index(last)
        t = types[k + 1]
        specs.append({
            "instance": entry.get("instance", f"engine{i}_{entry['name']}"),
            "layer": last,
            "fused": list(entry.get("fused", [entry["name"]])),
            "golden_index": k,
            "elements": int(entry.get("out_elements", entry["rows"])),
            "order": entry.get("out_order", "flat"),
            "frame": entry.get("out_frame"),
            "elements_per_transfer": int(entry.get("out_elements_per_transfer", 1)),
            "element_bits": int(entry.get("out_element_bits", t.bits)),
            "signed": bool(entry.get("out_signed", t.signed)),
        })
    return specs


def stream_order(codes: np.ndarray, order: str, frame=None) -> np.ndarray:
    """One sample's golden codes (any shape) flattened in the order the engine streams them:
    a ``(C, H, W)`` map in ``"hwc"`` order is sent pixel by pixel, channels fastest (a flattened
    one too, when ``frame`` gives its ``(C, H, W)``: an elementwise layer after a flatten)."""
    codes = np.asarray(codes)
    if codes.ndim == 1 and order == "hwc" and frame is not None and len(frame) == 3:
        codes = codes.reshape(frame)
    if codes.ndim == 3 and order == "hwc":
        codes = codes.transpose(1, 2, 0)
    return codes.reshape(-1)


def first_mismatch(got: np.ndarray, expected: np.ndarray) -> tuple[int, int] | None:
    """``(sample, element)`` of the first differing code in stream order, or None.

    Missing samples (``got`` shorter) count as a mismatch at element 0 of the first missing one.
    """
    n = min(len(got), len(expected))
    bad = np.argwhere(np.asarray(got[:n]) != np.asarray(expected[:n]))
    if len(bad):
        return int(bad[0][0]), int(bad[0][1])
    if len(got) < len(expected):
        return n, 0
    return None


@dataclass
class Diagnosis:
    """What went wrong, where. Printable; ``to_dict()`` goes into report.json."""
    sample: int
    output_element: int | None
    output_expected: int | None
    output_got: int | None
    first_bad_layer: str | None = None
    first_bad_instance: str | None = None
    fused: list = field(default_factory=list)
    element: int | None = None
    expected: int | None = None
    got: int | None = None
    layers_ok: list = field(default_factory=list)
    bad_elements: int = 0
    waves: str | None = None
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        lines = [f"sample {self.sample}: output element {self.output_element} expected "
                 f"{self.output_expected} got {self.output_got}"]
        if self.first_bad_layer is not None:
            lines.append(
                f"first bad layer: {self.first_bad_layer} (engine {self.first_bad_instance} = "
                f"{'+'.join(self.fused)}), element {self.element}: expected {self.expected}, "
                f"got {self.got} ({self.bad_elements} element(s) of this layer differ)")
            if self.layers_ok:
                lines.append(f"layers before it match: {', '.join(self.layers_ok)}")
        if self.note:
            lines.append(self.note)
        if self.waves:
            lines.append(f"waveform: {self.waves}")
        return "\n".join(lines)


def first_bad_layer(model: IntModel, specs: list[dict], inputs: np.ndarray,
                    probe_data: list[np.ndarray], sample: int) -> dict:
    """Compare each probe's recording of ``sample`` with the golden intermediates, in order.

    Returns a dict with ``first_bad_layer``, ``first_bad_instance``, ``fused``, ``element``,
    ``expected``, ``got``, ``bad_elements``, ``layers_ok`` and ``note`` (fields of
    :class:`Diagnosis`).
    """
    _, inter = golden.run(model, np.asarray(inputs)[:sample + 1], intermediates=True)
    ok = []
    for spec, rec in zip(specs, probe_data):
        want = stream_order(inter[spec["golden_index"]][sample], spec.get("order", "flat"),
                            spec.get("frame"))
        name = spec["layer"]
        if len(rec) <= sample:
            return {"first_bad_layer": name, "first_bad_instance": spec["instance"],
                    "fused": spec["fused"], "layers_ok": ok,
                    "note": f"engine {spec['instance']} delivered only {len(rec)} complete "
                            f"vector(s); sample {sample} never left it (stall or lost data)"}
        bad = np.nonzero(rec[sample] != want)[0]
        if len(bad):
            j = int(bad[0])
            return {"first_bad_layer": name, "first_bad_instance": spec["instance"],
                    "fused": spec["fused"], "element": j, "expected": int(want[j]),
                    "got": int(rec[sample][j]), "bad_elements": int(len(bad)),
                    "layers_ok": ok}
        ok.append(name)
    return {"layers_ok": ok,
            "note": "every engine output matches the golden model: the difference is in the "
                    "output stream (packer / m_axis framing)"}


def diagnose(model: IntModel, manifest: dict, verilog, inputs: np.ndarray,
             expected: np.ndarray, rtl_outputs: np.ndarray, simulator: str, work_dir, *,
             waves: bool = True, seed: int = 0, gap_prob: float = 0.0,
             stall_prob: float = 0.0) -> Diagnosis | None:
    """Re-run the stream up to the first bad sample with probes (and waves); locate the fault.

    Returns None when ``rtl_outputs`` equal ``expected``. The re-run streams the same samples in
    the same order with the same ``seed``, gaps and backpressure as the failing run, so a fault that
    depends on stream history reproduces.
    """
    from . import cosim
    inputs = np.asarray(inputs, dtype=np.int64).reshape(len(inputs), -1)
    where = first_mismatch(np.asarray(rtl_outputs), np.asarray(expected))
    if where is None:
        return None
    sample, elem = where
    have = np.asarray(rtl_outputs)
    out_got = int(have[sample][elem]) if sample < len(have) else None
    d = Diagnosis(sample, elem, int(np.asarray(expected)[sample][elem]), out_got)
    specs = probe_specs(manifest, model)
    r = cosim.cosimulate(verilog, manifest, inputs[:sample + 1], simulator,
                         Path(work_dir) / "diagnose", probes=specs, waves=waves,
                         measure_latency=False, seed=seed, gap_prob=gap_prob,
                         stall_prob=stall_prob)
    for k, v in first_bad_layer(model, specs, inputs, r.probes, sample).items():
        setattr(d, k, v)
    d.waves = r.waves
    return d


"""Synthesis results cached by the Verilog's hash and the device.

Place and route takes minutes; two flows that generate the same Verilog for the same device (a
sweep's points that differ only in what does not reach the hardware, a rerun) need it once.
:func:`synthesize` is :func:`softfloor.hw.synth.synthesize` with a cache directory: the key is the
sha256 of

* the Verilog text and the top module's name,
* the device (its name and nextpnr arguments), the clock target and the placer seed,
* the tools (native or YoWASP, and their versions) and the text of ``softfloor.hw.synth``
  (the synthesis script and its options live there: a change there is a new key),

and an entry ``CACHE/<key[:2]>/<key>/`` holds ``result.json`` (the :class:`SynthResult`) and the
logs, the nextpnr report and the bitstream text (``.asc``/``.config``), copied into the flow's
``synth/`` directory on a hit. An entry is written under a temporary name and renamed, and a
lock file per key makes a second flow wanting the same key wait for the first and then hit, so
concurrent flows (a sweep's workers, on one machine or sharing the directory over NFS) place and
route each design once.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

#: Files of a synthesis directory kept in the cache (the Yosys netlist JSON is not: it is large
#: and only nextpnr reads it).
KEEP_SUFFIXES = (".log", ".asc", ".config", "nextpnr-report.json")


def cache_key(verilog: str | os.PathLike, top: str, device: str, freq_mhz: float = 48.0,
              seed: int = 1) -> str:
    """The sha256 (hex) naming ``verilog``'s synthesis result for ``device``."""
    from softfloor.hw import synth
    dev = synth.get_device(device)
    h = hashlib.sha256()
    h.update(Path(verilog).read_bytes())
    meta = {"top": top, "device": dev.name, "nextpnr_args": list(dev.nextpnr_args),
            "freq_mhz": freq_mhz, "seed": seed, "tools": tool_versions(dev.family),
            "recipe": _recipe_hash()}
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def tool_versions(family: str) -> str:
    """Which Yosys and nextpnr-``family`` run, and their versions (YoWASP: the wheels')."""
    from importlib import metadata

    from softfloor.hw import synth
    yosys, nextpnr, kind = synth.find_tools(family)
    out = [kind]
    for cmd, flag in ((yosys, "-V"), (nextpnr, "--version")):
        name = Path(cmd[0]).name
        if name.startswith("yowasp-"):     # running it may compile WebAssembly: read the wheel
            try:
                out.append(f"{name} {metadata.version(name)}")
            except metadata.PackageNotFoundError:
                out.append(name)
            continue
        try:
            p = subprocess.run(cmd + [flag], capture_output=True, text=True, timeout=60)
            out.append((p.stdout or p.stderr).strip().splitlines()[0] if (p.stdout or p.stderr)
                       else name)
        except (OSError, subprocess.SubprocessError):
            out.append(name)
    return "; ".join(out)


@functools.lru_cache(maxsize=None)
def _recipe_hash() -> str:
    from softfloor.hw import synth
    return hashlib.sha256(Path(synth.__file__).read_bytes()).hexdigest()[:16]


def synthesize(verilog: str | os.PathLike, top: str, out_dir: str | os.PathLike,
               device: str, cache_dir: str | os.PathLike, progress=None, **kwargs):
    """:func:`softfloor.hw.synth.synthesize` through the cache in ``cache_dir``.

    Returns ``(result, key, hit)``: the :class:`~softfloor.hw.synth.SynthResult`, the cache key,
    and whether the result came from the cache (the files are then copied into ``out_dir``)."""
    from softfloor.hw import synth
    from softfloor.sim.cosim import build_lock
    key = cache_key(verilog, top, device, kwargs.get("freq_mhz", 48.0), kwargs.get("seed", 1))
    entry = Path(cache_dir) / key[:2] / key
    out = Path(out_dir)
    entry.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(entry):               # <entry>.lock: one synthesis per key at a time
        if (entry / "result.json").exists():
            res = synth.SynthResult(**json.loads((entry / "result.json").read_text()))
            out.mkdir(parents=True, exist_ok=True)
            for f in entry.iterdir():
                if f.name != "result.json":
                    shutil.copyfile(f, out / f.name)
            if progress:
                progress(f"synthesis cache hit {key[:12]} ({entry})")
            return res, key, True
        res = synth.synthesize(verilog, top, out, device, progress=progress, **kwargs)
        tmp = entry.with_name(f".{key}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for f in out.iterdir():
            if f.is_file() and f.name.endswith(KEEP_SUFFIXES):
                shutil.copyfile(f, tmp / f.name)
        (tmp / "result.json").write_text(json.dumps(res.to_dict(), indent=1) + "\n")
        tmp.rename(entry)
        return res, key, False

"""Benchmarks (`make bench`): speed, size and accuracy targets are measured here, never asserted.

Each section is a module ``softfloor.benchmarks.<name>`` with

    run(out_dir: pathlib.Path, quick: bool) -> dict   # {"rows": [dict, ...], "notes": [...], ...}

and the runner writes ``<out>/<name>.json`` plus ``<out>/<name>.md`` (a markdown table of the rows)
and a combined ``<out>/README.md``.
"""
SECTIONS = ("golden", "training", "hardware", "simulation", "qonnx", "compare", "sweep",
            "board", "mnist", "unrolled")

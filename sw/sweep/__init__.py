"""Design-space sweeps: many flows on Ray, a resumable results table, the Pareto front.

``softfloor sweep SPEC.toml --out DIR [--address ADDRESS]`` (docs/sweep.md):

* :mod:`~softfloor.sweep.spec` -- the TOML spec: axes over FlowOptions fields, stages, points;
* :mod:`~softfloor.sweep.engine` -- runs the points as Ray tasks and streams rows into
* :mod:`~softfloor.sweep.table` -- the SQLite results table (``DIR/sweep.sqlite``);
* :mod:`~softfloor.sweep.flowpoint` -- one point: a flow in its own directory, its report.json;
* :mod:`~softfloor.sweep.pareto` -- the front (accuracy, logic, inferences/s): PNG and markdown;
* :mod:`~softfloor.sweep.command` -- the command line.

Ray is an optional dependency (the ``[sweep]`` extra); only the engine imports it.
"""

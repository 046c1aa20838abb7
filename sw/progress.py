"""Progress of the long steps: training epochs, co-simulated samples, synthesis steps.

One :class:`Reporter` per run (:func:`reporter`). On a terminal it draws live bars with `rich`
(epochs with loss and accuracy, samples with rate and ETA, steps with their elapsed time); when
the output is not a terminal (``make demo > log``) it writes plain lines that read well in a
file; with ``quiet`` it writes nothing. The stages hand the callables below to the code that does
the work, so that code needs nothing from this module (``hw/`` and ``sim/`` never import it):

* :meth:`Reporter.epochs` -> ``update(epoch, epochs, info)``, the training loop's ``progress``;
* :meth:`Reporter.counter` -> ``update(done, total, note=None)``, e.g. co-simulated samples
  (``note`` names a phase, such as the simulator build, that has no rate of its own);
* :meth:`Reporter.steps` -> ``step(message)``, e.g. synthesis: each message starts a step and
  ends the one before it with its elapsed time.

Each is a context manager, so a failure in the middle still closes the display::

    rep = reporter()
    with rep.epochs("QAT w4a4") as update:
        train_qat(cfg, split, progress=update)
    with rep.steps("synth") as step:
        synthesize(..., progress=step)
"""
from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Callable, Iterator, TextIO

__all__ = ["Reporter", "LineReporter", "LiveReporter", "QuietReporter", "reporter",
           "format_seconds"]


def format_seconds(s: float) -> str:
    """``4.2 s``, ``1 min 05 s``, ``1 h 02 min``."""
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"


def _fields(info: dict | None) -> str:
    """The training loop's per-epoch info: ``loss 0.0351  train acc 98.9%  lr 0.0047  k 1.85``."""
    out = []
    for k, v in (info or {}).items():
        if k == "acc" and isinstance(v, float):
            out.append(f"train acc {100 * v:.1f}%")
        elif isinstance(v, float):
            out.append(f"{k} {v:.4g}")
        elif isinstance(v, (bool, int, str)):
            out.append(f"{k} {v}")
    return "  ".join(out)


class Reporter:
    """What every reporter offers (this base class reports nothing: ``quiet``)."""

    def say(self, msg: str) -> None:
        """One line of text."""

    @contextlib.contextmanager
    def epochs(self, label: str) -> Iterator[Callable[[int, int, dict], None]]:
        """A training run: yields ``update(epoch, epochs, info)``."""
        yield lambda epoch, epochs, info=None: None

    @contextlib.contextmanager
    def counter(self, label: str, total: int, unit: str = "samples"
                ) -> Iterator[Callable[..., None]]:
        """``total`` items done one by one: yields ``update(done, total, note=None)``."""
        yield lambda done, total=None, note=None: None

    @contextlib.contextmanager
    def steps(self, label: str) -> Iterator[Callable[[str], None]]:
        """A sequence of steps: yields ``step(message)``, each call starting the next step."""
        yield lambda message: None


QuietReporter = Reporter


class LineReporter(Reporter):
    """Plain lines for a log file: epochs every ``epoch_every`` and the last, counters every
    ``count_every_s`` seconds, steps when they start and when they end."""

    def __init__(self, stream: TextIO | None = None, *, epoch_every: int = 10,
                 count_every_s: float = 15.0, clock: Callable[[], float] = time.monotonic):
        self.stream = stream
        self.epoch_every, self.count_every_s, self.clock = epoch_every, count_every_s, clock
        self._lock = threading.Lock()

    def say(self, msg: str) -> None:
        with self._lock:
            print(msg, file=self.stream or sys.stdout, flush=True)

    @contextlib.contextmanager
    def epochs(self, label: str):
        t0 = self.clock()

        def update(epoch: int, epochs: int, info: dict | None = None) -> None:
            if epoch % self.epoch_every and epoch != epochs:
                return
            dt = self.clock() - t0
            eta = f", ETA {format_seconds(dt / epoch * (epochs - epoch))}" if epoch < epochs else ""
            self.say(f"  {label}: epoch {epoch}/{epochs}  {_fields(info)}  "
                     f"({format_seconds(dt)}{eta})")
        yield update

    @contextlib.contextmanager
    def counter(self, label: str, total: int, unit: str = "samples"):
        t0 = self.clock()
        state = {"last": t0, "note": None, "done": 0, "total": total, "t_first": None}

        def update(done: int, total: int | None = None, note: str | None = None) -> None:
            now = self.clock()
            if total is not None:
                state["total"] = total
            if note != state["note"]:
                state["note"], state["last"] = note, now
                if note:
                    self.say(f"  {label}: {note} ...")
            if note is None and state["t_first"] is None:  # the rate counts from here
                state["t_first"], state["d_first"] = now, done
            state["done"] = done
            if 0 < done < state["total"] and now - state["last"] >= self.count_every_s:
                state["last"] = now
                self.say(f"  {label}: {done}/{state['total']} {unit}"
                         f"{self._rate(state, now, unit)}")
        yield update
        now = self.clock()
        self.say(f"  {label}: {state['done']}/{state['total']} {unit} in "
                 f"{format_seconds(now - t0)}{self._rate(state, now, unit, eta=False)}")

    @staticmethod
    def _rate(state: dict, now: float, unit: str, eta: bool = True) -> str:
        if state["t_first"] is None or now <= state["t_first"]:
            return ""
        n = state["done"] - state["d_first"]
        if n <= 0:
            return ""
        rate = n / (now - state["t_first"])
        text = f", {rate:.1f} {unit}/s"
        if eta and state["done"] < state["total"]:
            text += f", ETA {format_seconds((state['total'] - state['done']) / rate)}"
        return text

    @contextlib.contextmanager
    def steps(self, label: str):
        cur: dict = {}

        def end() -> None:
            if cur:
                self.say(f"  {cur['msg']}: done in {format_seconds(self.clock() - cur['t0'])}")
                cur.clear()

        def step(message: str) -> None:
            end()
            cur.update(msg=message, t0=self.clock())
            self.say(f"  {message} ...")
        try:
            yield step
        finally:
            end()


class LiveReporter(Reporter):
    """Live bars on a terminal (`rich`); each context draws while it is open and leaves its
    final line behind."""

    def __init__(self, stream: TextIO | None = None):
        from rich.console import Console
        self.console = Console(file=stream or sys.stdout, highlight=False)

    def say(self, msg: str) -> None:
        self.console.print(msg, markup=False, highlight=False, soft_wrap=True)

    def _progress(self, *columns):
        from rich.progress import Progress, TextColumn
        return Progress(TextColumn("  {task.description}"), *columns, console=self.console,
                        transient=False, refresh_per_second=8)

    @contextlib.contextmanager
    def epochs(self, label: str):
        from rich.progress import (BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)
        with self._progress(BarColumn(bar_width=24), MofNCompleteColumn(), TextColumn("epochs"),
                            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                            TextColumn("{task.fields[info]}")) as p:
            task = p.add_task(label, total=None, info="")

            def update(epoch: int, epochs: int, info: dict | None = None) -> None:
                p.update(task, completed=epoch, total=epochs, info=_fields(info))
            yield update

    @contextlib.contextmanager
    def counter(self, label: str, total: int, unit: str = "samples"):
        from rich.progress import (BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)
        with self._progress(BarColumn(bar_width=24), MofNCompleteColumn(), TextColumn(unit),
                            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(),
                            TextColumn("ETA"), TimeRemainingColumn(),
                            TextColumn("{task.fields[note]}")) as p:
            task = p.add_task(label, total=total, rate="", note="")
            first: dict = {}

            def update(done: int, total: int | None = None, note: str | None = None) -> None:
                now = time.monotonic()
                if done and not first:
                    first.update(t=now, done=done)
                rate = ""
                if first and now > first["t"] and done > first["done"]:
                    rate = f"{(done - first['done']) / (now - first['t']):.1f}/s"
                p.update(task, completed=done, rate=rate, note=note or "",
                         **({"total": total} if total is not None else {}))
            yield update

    @contextlib.contextmanager
    def steps(self, label: str):
        from rich.progress import SpinnerColumn, TimeElapsedColumn
        with self._progress(SpinnerColumn(finished_text="[green]done"), TimeElapsedColumn()) as p:
            cur: list = []

            def step(message: str) -> None:
                for t in cur:
                    p.update(t, completed=1, total=1)
                    p.stop_task(t)
                cur[:] = [p.add_task(message, total=None)]
            try:
                yield step
            finally:
                for t in cur:
                    p.update(t, completed=1, total=1)
                    p.stop_task(t)


def reporter(quiet: bool = False, stream: TextIO | None = None, live: bool | None = None
             ) -> Reporter:
    """The reporter for this output: nothing when ``quiet``, live bars on a terminal (``live``
    None: ``stream.isatty()``), plain lines otherwise."""
    if quiet:
        return Reporter()
    out = stream or sys.stdout
    if live is None:
        live = bool(getattr(out, "isatty", lambda: False)())
    if live:
        try:
            return LiveReporter(stream)
        except ImportError:  # rich missing: plain lines still say everything
            pass
    return LineReporter(stream)

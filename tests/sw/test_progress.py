"""Progress of the long steps: line logs for files, live bars for terminals, nothing when quiet."""
from __future__ import annotations

import io

from softfloor import cli, progress


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_line_log_of_epochs_samples_and_steps():
    out, clock = io.StringIO(), Clock()
    rep = progress.LineReporter(out, epoch_every=10, count_every_s=15, clock=clock)
    with rep.epochs("QAT w4a4") as update:
        for e in range(1, 21):
            clock.t = 0.5 * e
            update(e, 20, {"loss": 0.03512, "acc": 0.989, "lr": 0.0047, "hard": False})
    with rep.counter("icarus", 360) as update:
        update(0, 360, "building the icarus model")
        clock.t = 20.0
        update(0, 360, None)
        for done in range(0, 361, 40):
            clock.t = 20.0 + done / 6
            update(done, 360, None)
    with rep.steps("synth") as step:
        step("yosys synth_ice40")
        clock.t = 100.0
        step("nextpnr-ice40 --up5k")
        clock.t = 164.0
    lines = out.getvalue().splitlines()
    assert lines[0] == ("  QAT w4a4: epoch 10/20  loss 0.03512  train acc 98.9%  lr 0.0047  "
                        "hard False  (5.0 s, ETA 5.0 s)")
    assert lines[1].startswith("  QAT w4a4: epoch 20/20  ") and lines[1].endswith("(10.0 s)")
    assert lines[2] == "  icarus: building the icarus model ..."
    # one line per 15 s at most, with rate and ETA counted from the first sample out
    assert lines[3] == "  icarus: 120/360 samples, 6.0 samples/s, ETA 40.0 s"
    assert lines[4] == "  icarus: 240/360 samples, 6.0 samples/s, ETA 20.0 s"
    assert lines[5] == "  icarus: 360/360 samples in 1 min 10 s, 6.0 samples/s"
    assert lines[-4:] == ["  yosys synth_ice40 ...", "  yosys synth_ice40: done in 20.0 s",
                          "  nextpnr-ice40 --up5k ...",
                          "  nextpnr-ice40 --up5k: done in 1 min 04 s"]


def test_a_terminal_gets_live_bars_a_file_lines_and_quiet_nothing():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    assert isinstance(progress.reporter(stream=Tty()), progress.LiveReporter)
    assert isinstance(progress.reporter(stream=io.StringIO()), progress.LineReporter)
    quiet = progress.reporter(quiet=True, stream=Tty())
    with quiet.epochs("x") as update:
        update(1, 1, {"loss": 1.0})
    assert type(quiet) is progress.Reporter

    out = Tty()
    live = progress.LiveReporter(out)
    with live.counter("verilator", 3) as update:
        update(0, 3, "building the verilator model")
        for k in range(4):
            update(k, 3, None)
    with live.epochs("float") as update:
        update(2, 2, {"loss": 0.5, "acc": 0.75})
    with live.steps("synth") as step:
        step("yosys synth_ice40")
    text = out.getvalue()
    assert "verilator" in text and "3/3" in text and "samples" in text
    assert "2/2" in text and "train acc 75.0%" in text
    assert "yosys synth_ice40" in text and "done" in text


def test_seconds_read_as_a_person_would_say_them():
    assert progress.format_seconds(4.23) == "4.2 s"
    assert progress.format_seconds(65) == "1 min 05 s"
    assert progress.format_seconds(3720) == "1 h 02 min"


def test_version(capsys):
    try:
        cli.main(["--version"])
    except SystemExit as e:
        assert e.code == 0
    assert capsys.readouterr().out.strip() == f"softfloor {cli.version()}"
    assert cli.version()[0].isdigit()


def test_train_prints_its_epochs_and_both_accuracies(tmp_path, capsys):
    """Not a terminal (pytest captures): plain lines, the last epoch of each run, and the test
    accuracy of the float and the hard-quantized model."""
    assert cli.main(["data", "--out", str(tmp_path)]) == 0
    assert cli.main(["train", "--out", str(tmp_path), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "  float: epoch 2/2  loss " in out and "  QAT w4a4: epoch 2/2  loss " in out
    assert "train acc " in out
    line = next(ln for ln in out.splitlines() if "test accuracy" in ln)
    assert line.startswith("  test accuracy (360 samples): float ") and "quantized " in line
    assert "[train] done in " in out

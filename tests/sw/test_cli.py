"""Bad input gets a clear error and a non-zero exit, before any work is done."""
import json
import subprocess
import sys

import numpy as np
import pytest

from softfloor import cli, intmodel as im
from tests.randmodel import random_model


def run(*args):
    return subprocess.run([sys.executable, "-m", "softfloor", *args], capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("args, match", [
    (["--weight-bits", "9"], "--weight-bits 9 is outside the supported range 1..8"),
    (["--act-bits", "0"], "--act-bits 0 is outside the supported range 1..8"),
    (["--first-weight-bits", "9"], "--first-weight-bits 9 is outside the supported range 1..8"),
    (["--weight-bits", "four"], "must be an integer"),
    (["--surrogate", "magic"], "invalid choice: 'magic'"),
    (["--device", "xc7a35t"], "invalid choice: 'xc7a35t'"),
    (["--simulator", "modelsim"], "invalid choice: 'modelsim'"),
])
def test_bad_flow_options_exit_nonzero(args, match, tmp_path):
    r = run("flow", "--out", str(tmp_path / "o"), *args)
    assert r.returncode == 2
    assert match in r.stderr
    assert not (tmp_path / "o").exists()


def test_missing_model_file(tmp_path):
    r = run("flow", "--out", str(tmp_path / "o"), "--model", str(tmp_path / "nope.json"),
            "--inputs", str(tmp_path / "x.npy"), "--no-synth")
    assert r.returncode == 2
    assert "no such model file" in r.stderr


def test_corrupt_model_file(tmp_path):
    m = random_model(np.random.default_rng(0), (16, 8, 4), in_bits=4, final_requant=False, multipliers=False).to_dict()
    m["layers"][0]["acc_bits"] = 3
    p = tmp_path / "bad.intmodel.json"
    p.write_text(json.dumps(m))
    r = run("info", str(p))
    assert r.returncode == 2
    assert "acc_bits" in r.stderr and "can overflow" in r.stderr
    p.write_text("{")
    r = run("info", str(p))
    assert r.returncode == 2 and "not valid JSON" in r.stderr


def test_info_prints_summary(tmp_path):
    p = im.save(random_model(np.random.default_rng(0), (16, 8, 4), in_bits=4, final_requant=False, multipliers=False), tmp_path / "m.intmodel.json")
    assert cli.main(["info", str(p)]) == 0


def test_stage_without_its_input_says_what_to_run(tmp_path, capsys):
    assert cli.main(["rtl", "--out", str(tmp_path)]) == 2
    assert "run `softfloor export" in capsys.readouterr().err


def test_device_list_matches_synth():
    from softfloor.hw import synth
    assert set(cli.DEVICES) == set(synth.DEVICES)


def test_arch_and_per_channel_options():
    o = cli._options(cli.parser().parse_args(["train", "--arch", "cnn", "--per-channel"]))
    assert (o.arch, o.per_channel) == ("cnn", True)
    o = cli._options(cli.parser().parse_args(["flow"]))
    assert (o.arch, o.per_channel) == ("mlp", False)
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["flow", "--arch", "resnet"])


def test_activation_option():
    from softfloor import flow, models
    assert flow.ACTIVATIONS == tuple(models.ACTIVATIONS)
    o = cli._options(cli.parser().parse_args(["train", "--activation", "hardtanh"]))
    assert o.activation == "hardtanh"
    assert cli._options(cli.parser().parse_args(["flow"])).activation == "relu"
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["flow", "--activation", "tanh"])


def test_scales_option():
    from softfloor import flow, quant
    assert flow.SCALES == quant.SCALES
    assert cli._options(cli.parser().parse_args(["train", "--scales", "free"])).scales == "free"
    assert cli._options(cli.parser().parse_args(["flow"])).scales == "po2"
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["flow", "--scales", "pow2"])


def test_augment_options():
    o = cli._options(cli.parser().parse_args(["train", "--augment-shift", "1",
                                              "--augment-noise", "0.05"]))
    assert (o.augment_shift, o.augment_noise) == (1, 0.05)
    o = cli._options(cli.parser().parse_args(["flow"]))
    assert (o.augment_shift, o.augment_noise) == (None, None)
    for bad in (["--augment-noise", "2"], ["--augment-shift", "8"], ["--augment-noise", "x"]):
        with pytest.raises(SystemExit):
            cli.parser().parse_args(["train"] + bad)


def test_lr_schedule_and_binary_act_grad_options():
    """--lr-schedule (dashes or underscores) and --binary-act-grad reach the training config;
    unset, the trainer resolves them per configuration; a triangle on 2-bit activations is a
    clear error."""
    from softfloor import flow
    parse = cli.parser().parse_args
    o = cli._options(parse(["train", "--lr-schedule", "flat-cosine", "--binary-act-grad",
                            "triangle", "--weight-bits", "1", "--act-bits", "1"]))
    assert (o.lr_schedule, o.binary_act_grad) == ("flat_cosine", "triangle")
    assert cli._options(parse(["flow", "--lr-schedule", "flat_cosine"])).lr_schedule \
        == "flat_cosine"
    cfg = flow._train_config(cli._options(parse(["flow", "--weight-bits", "1", "--act-bits",
                                                 "1", "--surrogate", "ste", "--lr-schedule",
                                                 "cosine"])))
    assert (cfg.learning_rate_schedule, cfg.binary_grad) == ("cosine", "triangle")
    o = cli._options(parse(["flow"]))
    assert (o.lr_schedule, o.binary_act_grad) == (None, None)
    for bad in (["--lr-schedule", "step"], ["--binary-act-grad", "sawtooth"]):
        with pytest.raises(SystemExit):
            parse(["train"] + bad)
    with pytest.raises(ValueError, match="1-bit activations"):
        flow._train_config(cli._options(parse(["flow", "--binary-act-grad", "triangle",
                                               "--act-bits", "2"])))


def test_first_weight_bits_option():
    o = cli._options(cli.parser().parse_args(["train", "--weight-bits", "1",
                                              "--first-weight-bits", "8"]))
    assert (o.weight_bits, o.first_weight_bits) == (1, 8)
    assert cli._options(cli.parser().parse_args(["flow"])).first_weight_bits is None


def test_input_quant_option(tmp_path, capsys):
    """--input-quant per-pixel / global / learned (underscores accepted) reaches the flow
    options and the data stage (learned: the calibrated codes it starts from); per-pixel at a
    4-bit input is a clear error, not a silent fallback."""
    parse = cli.parser().parse_args
    assert cli._options(parse(["data", "--input-quant", "per-pixel"])).input_quant == "per_pixel"
    assert cli._options(parse(["train", "--input-quant", "per_pixel"])).input_quant == "per_pixel"
    assert cli._options(parse(["flow", "--input-quant", "global"])).input_quant == "global"
    assert cli._options(parse(["flow", "--input-quant", "learned"])).input_quant == "learned"
    assert cli._options(parse(["flow"])).input_quant is None
    with pytest.raises(SystemExit):
        parse(["flow", "--input-quant", "otsu"])
    out = tmp_path / "d"
    assert cli.main(["data", "--out", str(out), "--quiet", "--weight-bits", "1",
                     "--act-bits", "1", "--input-quant", "global"]) == 0
    codes = np.load(out / "inputs.npz")["codes"]
    from softfloor.data import load_digits_split
    assert np.array_equal(codes, load_digits_split(1).c_test)
    assert cli.main(["data", "--out", str(out), "--quiet", "--weight-bits", "1",
                     "--act-bits", "1"]) == 0
    assert np.array_equal(np.load(out / "inputs.npz")["codes"],
                          load_digits_split(1, "per_pixel").c_test)
    import json
    assert json.loads((out / "stages" / "data.json").read_text())["input_quant"] == "learned"
    assert cli.main(["data", "--out", str(out), "--quiet", "--input-bits", "4",
                     "--input-quant", "per-pixel"]) != 0
    assert "needs 1-bit inputs" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "flow"])
def test_help_shows_the_defaults_per_configuration(command, capsys):
    """``--help`` states each per-configuration rule and lists the resolved defaults, computed
    from ``TrainConfig`` (so they cannot drift from the code)."""
    from softfloor.train import DEFAULT_RULES, TrainConfig
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert f"default: {DEFAULT_RULES['surrogate']}" in out
    table = out.split("training defaults per configuration", 1)[1]
    for name, kw in cli.SHOWN_DEFAULTS:
        cfg = TrainConfig(**kw)
        row = f"{name} {cfg.surrogate} {'on' if cfg.use_batchnorm else 'off'}"
        assert f" {row} " in f" {table} ", row

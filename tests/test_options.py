"""Typed options: one parser for extractor parameters and model options."""

from dataclasses import dataclass
from typing import Literal

import pytest

from gemo import extractors, models
from gemo.errors import GemoError
from gemo.options import Options


@dataclass(frozen=True)
class Sample(Options):
    count: int = 10
    rate: float = 0.5
    flip: bool = True
    mode: Literal["mean", "lstm"] = "mean"
    label: str = "x"

    def check(self):
        return "count must be positive" if self.count < 1 else None


def test_text_is_read_by_the_fields_type():
    parsed = Sample.parse({"count": "16", "rate": "2", "flip": "off", "mode": "lstm",
                           "label": "7"}, owner="sample")
    assert parsed == Sample(count=16, rate=2.0, flip=False, mode="lstm", label="7")
    assert isinstance(parsed.rate, float) and parsed.label == "7"


def test_values_must_have_the_type_already_or_widen_from_int():
    assert Sample.parse({"rate": 3}, owner="s").rate == 3.0
    for given, message in (({"count": 2.5}, "not a int"), ({"count": True}, "not a int"),
                           ({"flip": "maybe"}, "not a bool"), ({"mode": "gru"}, "not one of mean, lstm"),
                           ({"count": "many"}, "'many' is not a int"), ({"cont": 1}, "unknown"),
                           ({"count": "0"}, "count must be positive")):
        with pytest.raises(GemoError, match=message):
            Sample.parse(given, owner="sample")


def test_defaults_and_plain_dict():
    assert Sample.defaults() == {"count": 10, "rate": 0.5, "flip": True, "mode": "mean",
                                 "label": "x"}


def test_extractor_params_and_model_options_use_it():
    # What caches and checkpoints store is unchanged: a plain dict of every parameter.
    assert extractors.create("frames").provenance()["params"] == {"count": 10, "size": 224}
    assert extractors.create("frames", count="16").params.count == 16
    with pytest.raises(GemoError, match="frames: count and size must be positive"):
        extractors.create("frames", count=0)
    with pytest.raises(GemoError, match="faces: unknown parameter.*known: count"):
        extractors.create("faces", cuont=3)
    model = models.create("frame-cnn", input_dim=3, temporal="lstm", flip="false")
    assert model.config["temporal"] == "lstm" and model.config["flip"] is False
    with pytest.raises(GemoError, match="backbone: 'alexnet' is not one of i3d, .*, small, vgg19"):
        models.create("frame-cnn", input_dim=3, backbone="alexnet")


def test_command_line_values_reach_the_typed_options(tmp_path, synth_data):
    from click.testing import CliRunner

    from gemo.cli import cli

    result = CliRunner().invoke(cli, ["extract", str(synth_data), "-p", "frames.count=many",
                                      "--workdir", str(tmp_path / "w")])
    assert result.exit_code == 2 and "frames.count: 'many' is not a int" in result.output
    result = CliRunner().invoke(cli, ["extract", str(synth_data), "-p", "count=3"])
    assert result.exit_code == 2 and "SET.KEY=VALUE" in result.output

"""The product's sampling is assembled in one place (sampling/settings.product_sampling): the command line, the
evaluation (with exact arithmetic) and the speed benchmark all follow a change of defaults.py."""

from __future__ import annotations

import dataclasses

import pytest
from conftest import speed_benchmark as _speed

from ControlCGLib import defaults
from ControlCGLib.cli import build_parser
from ControlCGLib.commands.counterfactual import request_sampling
from ControlCGLib.evaluation.measures import EvaluationSettings
from ControlCGLib.run_request import RunRequest
from ControlCGLib.sampling.settings import BlendConfig, product_sampling


def _three(model_name="cpu"):
    """The sampling of the command line (as parsed, nothing set), the evaluation's ours and the benchmark's product."""
    args = build_parser().parse_args(
        ["counterfactual", "t1.nii.gz", "--target", "AD", "--out", "out", "--precision", "fp32"]
    )
    cli = request_sampling(RunRequest.from_args(args, args.input), model_name, "cpu")
    evaluation = EvaluationSettings().sampling(model_name)
    speed = _speed()
    benchmark = speed._sampling(speed.LADDER[-1], model_name)
    return cli, evaluation, benchmark


def test_the_three_callers_run_the_product():
    cli, evaluation, benchmark = _three()
    assert cli == product_sampling("cpu", precision="fp32")
    assert evaluation == product_sampling("cpu", exact=True)
    assert benchmark == product_sampling("cpu", precision="bf16")
    # the evaluation is the product with exact arithmetic, nothing else
    assert dataclasses.replace(cli, kv_stride=1) == evaluation
    assert cli.start_strength == defaults.START_STRENGTH.default and cli.blend == BlendConfig()


@pytest.mark.parametrize(
    "name, value, field, expected",
    [
        ("STEPS", dataclasses.replace(defaults.STEPS, default=12), "steps", 12),
        ("START_STRENGTH", dataclasses.replace(defaults.START_STRENGTH, default=0.5), "start_strength", 0.5),
        ("SOLVER", "dpm++2m", "solver", "dpm++2m"),
        ("SPACING", "log-snr", "spacing", "log-snr"),
        ("BLEND", False, "blend", None),
    ],
)
def test_a_changed_default_reaches_all_three(monkeypatch, name, value, field, expected):
    monkeypatch.setattr(defaults, name, value)
    for sampling in _three():
        assert getattr(sampling, field) == expected, name


def test_the_key_stride_default_reaches_the_product_but_not_the_exact_evaluation(monkeypatch):
    monkeypatch.setattr(defaults, "KV_STRIDE", dataclasses.replace(defaults.KV_STRIDE, default=3))
    cli, evaluation, benchmark = _three()
    assert (cli.kv_stride, benchmark.kv_stride, evaluation.kv_stride) == (3, 3, 1)


def test_injection_follows_the_model_preset(monkeypatch):
    assert all(s.injection is None for s in _three("cpu"))
    assert all(s.injection is not None for s in _three("paper"))
    monkeypatch.setattr(defaults, "INJECTION", "on")
    assert all(s.injection is not None for s in _three("cpu"))


def test_a_request_or_an_evaluation_setting_replaces_one_setting():
    args = build_parser().parse_args(["counterfactual", "t1.nii.gz", "--target", "AD", "--out", "o", "--steps", "9"])
    args.precision = "fp32"
    assert request_sampling(RunRequest.from_args(args, "t1.nii.gz"), "cpu", "cpu").steps == 9
    assert EvaluationSettings(steps=4, kv_stride=2).sampling("cpu") == product_sampling(
        "cpu", exact=True, steps=4, kv_stride=2
    )
    no_blend = build_parser().parse_args(["counterfactual", "x", "--target", "AD", "--out", "o", "--no-blend"])
    assert RunRequest.from_args(no_blend, "x").sampling_changes() == {"blend": False}

"""The speed benchmark's measuring helpers keep working (its figures are not tested: docs/performance.md)."""

from __future__ import annotations

import torch
from conftest import speed_benchmark as _speed


def test_ceiling_and_forward_cost_measure_something(tiny_model):
    speed = _speed()
    assert speed.matmul_ceiling(torch.float32, n=64, reps=1) > 0
    for precision in ("fp32", "bf16"):
        seconds, gflop = speed.forward_cost(tiny_model, precision, reps=1)
        assert seconds > 0 and gflop > 0
    assert speed._batched_pass(tiny_model, "fp32", reps=1) > 0


def test_the_pass_profile_sorts_operators_into_kinds(monkeypatch, tiny_model):
    from ControlCGLib.sampling import token_downsampling

    speed = _speed()
    monkeypatch.setattr(token_downsampling, "MIN_TOKENS", 64)
    exact = speed.pass_profile(tiny_model, "fp32")
    assert exact["convolution"] > 0 and exact["attention"] > 0 and exact["norm"] > 0
    _, flop_exact = speed.forward_cost(tiny_model, "fp32", reps=1)
    _, flop_fewer = speed.forward_cost(tiny_model, "fp32", reps=1, kv_stride=2)
    assert flop_fewer < flop_exact  # fewer keys: fewer attention FLOPs, counted


def test_every_rung_of_the_ladder_names_its_quality_entry():
    speed = _speed()
    assert speed.LADDER[0].per_w and speed.LADDER[0].steps == 50 and speed.LADDER[0].precision == "fp32"
    from ControlCGLib.sampling.settings import product_sampling

    product = speed.LADDER[-1]
    assert speed._sampling(product) == product_sampling("cpu", precision="bf16") and not product.per_w
    assert len({v.quality for v in speed.LADDER}) == len(speed.LADDER)

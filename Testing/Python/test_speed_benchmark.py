"""The speed benchmark's measuring helpers keep working (its figures themselves are not tested: see README)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

SPEED = Path(__file__).resolve().parents[2] / "benchmarks" / "speed.py"


def _speed():
    spec = importlib.util.spec_from_file_location("speed_benchmark", SPEED)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ceiling_and_forward_cost_measure_something(tiny_model):
    speed = _speed()
    assert speed.matmul_ceiling(torch.float32, n=64, reps=1) > 0
    for precision in ("fp32", "bf16"):
        seconds, gflop = speed.forward_cost(tiny_model, precision, reps=1)
        assert seconds > 0 and gflop > 0
    assert speed._batched_pass(tiny_model, "fp32", reps=1) > 0

"""The diffusion trainer: it learns, it logs, and an interrupted run resumes exactly."""

from __future__ import annotations

import csv

import pytest
import torch
from conftest import tiny_config
from safetensors.torch import load_file

from ControlCGLib.model.checkpoints import load_checkpoint
from ControlCGLib.progress import Cancelled
from ControlCGLib.training.diffusion_trainer import TrainConfig, train_diffusion


class _Data:
    def __init__(self, n=6):
        g = torch.Generator().manual_seed(0)
        self.items = [(torch.rand(1, 8, 8, 8, generator=g) * 2 - 1, i % 2) for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _weights(folder):
    return load_file(str(folder / "state" / "model.safetensors")), load_file(str(folder / "state" / "ema.safetensors"))


def test_interrupted_run_resumes_exactly(tmp_path):
    cfg = tiny_config()
    fast = {"batch_size": 2, "lr": 1e-3, "precision": "no", "checkpoint_every": 2}
    train_diffusion(cfg, _Data(), tmp_path / "straight", TrainConfig(steps=4, **fast))
    train_diffusion(cfg, _Data(), tmp_path / "resumed", TrainConfig(steps=2, **fast))
    train_diffusion(cfg, _Data(), tmp_path / "resumed", TrainConfig(steps=4, **fast))
    for a, b in zip(_weights(tmp_path / "straight"), _weights(tmp_path / "resumed")):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = list(csv.DictReader(open(tmp_path / "resumed" / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    model = load_checkpoint(tmp_path / "resumed" / "model")
    assert model.config == cfg


def test_resume_after_a_crash_keeps_one_log_row_per_step_and_a_running_clock(tmp_path):
    cfg = tiny_config()
    fast = {"batch_size": 2, "lr": 1e-3, "precision": "no", "checkpoint_every": 2}
    train_diffusion(cfg, _Data(), tmp_path, TrainConfig(steps=2, **fast))
    with open(tmp_path / "metrics.csv", "a") as f:  # steps logged after the last save, then the process died
        f.write("3,0.5,0.001,99.0\n4,0.5,0.001,100.0\n")
    train_diffusion(cfg, _Data(), tmp_path, TrainConfig(steps=4, **fast))
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]
    seconds = [float(r["seconds"]) for r in rows]
    assert seconds == sorted(seconds) and seconds[-1] < 99.0


def test_stop_saves_a_resumable_state(tmp_path):
    cfg = tiny_config()
    seen = []
    with pytest.raises(Cancelled, match="resume"):
        train_diffusion(
            cfg,
            _Data(),
            tmp_path,
            TrainConfig(steps=10, precision="no", checkpoint_every=100),
            on_step=lambda s, loss: seen.append(s),
            should_stop=lambda: len(seen) >= 3,
        )
    assert (tmp_path / "state" / "step.json").read_text() == '{"step": 3}'


def test_loss_goes_down(tmp_path):
    cfg = tiny_config()
    losses = []
    train_diffusion(
        cfg,
        _Data(2),
        tmp_path,
        TrainConfig(steps=60, batch_size=4, lr=3e-3, precision="no", checkpoint_every=100),
        on_step=lambda s, v: losses.append(v),
    )
    assert sum(losses[-10:]) / 10 < 0.7 * sum(losses[:10]) / 10


def test_train_command_on_a_simulated_cohort(tmp_path, simulated_manifest):
    from ControlCGLib.cli import main

    manifest = simulated_manifest
    args = [
        "train",
        "diffusion",
        "--cohort",
        str(manifest),
        "--out",
        str(tmp_path / "run"),
        "--steps",
        "2",
        "--checkpoint-every",
        "1",
        "--batch-size",
        "1",
    ]
    assert main(args) == 0
    model = load_checkpoint(tmp_path / "run" / "model")
    assert model.config.name == "cpu"
    assert len(list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))) == 2

"""The diagnostic classifier: trains to separate the toy classes, keeps its best checkpoint, gives a verdict."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from ControlCGLib.data.toy import toy_batch
from ControlCGLib.model.checkpoints import load_checkpoint
from ControlCGLib.model.classifier import classify
from ControlCGLib.model.config import ClassifierConfig
from ControlCGLib.sampling.noise import make_generator
from ControlCGLib.training.classifier_trainer import ClassifierTrainConfig, train_classifier


class _Toy:
    def __init__(self, n, seed):
        x, labels, _ = toy_batch(n, make_generator(seed))
        self.items = [(x[i], int(labels[i])) for i in range(n)]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _toy_classifier(**sizes) -> ClassifierConfig:
    return ClassifierConfig(grid=(16, 16, 16), class_names=("small", "large"), growth_rate=4, **sizes)


def test_classifier_learns_and_judges(tmp_path):
    cfg = _toy_classifier(init_features=8, block_config=(2, 2), norm="batch")
    train = ClassifierTrainConfig(steps=60, batch_size=8, lr=3e-2, eval_every=20, augment=False)
    folder = train_classifier(cfg, _Toy(32, 0), _Toy(16, 1), tmp_path, train)
    model = load_checkpoint(folder)
    assert model.config == cfg
    x, labels, _ = toy_batch(8, make_generator(2))
    verdicts = [classify(model, x[i, 0], cfg.class_names) for i in range(8)]
    assert all(abs(sum(v.values()) - 1) < 1e-5 for v in verdicts)
    correct = sum(max(v, key=v.get) == cfg.class_names[int(c)] for v, c in zip(verdicts, labels))
    assert correct >= 7
    with pytest.raises(ValueError, match="3D"):
        classify(model, torch.zeros(4, 4), cfg.class_names)


def test_interrupted_classifier_run_resumes_exactly(tmp_path):
    cfg = _toy_classifier(init_features=4, block_config=(1,), norm="group", dropout_prob=0.2)
    data, val = _Toy(8, 0), _Toy(4, 1)
    run = {"batch_size": 4, "lr": 1e-2, "eval_every": 2}
    train_classifier(cfg, data, val, tmp_path / "straight", ClassifierTrainConfig(steps=6, **run))
    train_classifier(cfg, data, val, tmp_path / "resumed", ClassifierTrainConfig(steps=4, **run))
    with open(tmp_path / "resumed" / "metrics.csv", "a") as f:  # a row logged after the last state, then a crash
        f.write("5,0.1,0.5\n")
    train_classifier(cfg, data, val, tmp_path / "resumed", ClassifierTrainConfig(steps=6, **run))
    a, b = (load_file(str(tmp_path / r / "state" / "model.safetensors")) for r in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    logs = [(tmp_path / r / "metrics.csv").read_text() for r in ("straight", "resumed")]
    assert logs[0] == logs[1]


def test_missing_class_is_refused(tmp_path):
    cfg = _toy_classifier(init_features=4, block_config=(1,))
    only_small = _Toy(8, 0)
    only_small.items = [(v, 0) for v, _ in only_small.items]
    with pytest.raises(ValueError, match=r"no scan of class\(es\) \['large'\]"):
        train_classifier(cfg, only_small, only_small, tmp_path, ClassifierTrainConfig(steps=1))


def test_train_classifier_command(tmp_path, simulated_manifest):
    from ControlCGLib.cli import main

    manifest = simulated_manifest
    args = [
        "train",
        "classifier",
        "--cohort",
        str(manifest),
        "--out",
        str(tmp_path / "clf"),
        "--steps",
        "2",
        "--eval-every",
        "1",
        "--batch-size",
        "2",
    ]
    assert main(args) == 0
    assert load_checkpoint(tmp_path / "clf" / "model").config.grid == (40, 48, 40)

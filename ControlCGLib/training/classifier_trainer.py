"""Training the diagnostic classifier (paper: 3D DenseNet-121, SGD, lr 3e-2, batch 4).

Class-balanced sampling (each batch draws classes equally often, seeded), light augmentation (left-right flip, which
is anatomically plausible for a symmetric template space, intensity scale and shift, shifts of one voxel); the
checkpoint with the best validation accuracy is kept.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..model.checkpoints import save_checkpoint
from ..model.classifier import evaluate
from ..model.config import ClassifierConfig
from ..model.networks import build_classifier
from .resume import find_state, load_state, save_state, trim_metrics


@dataclass(frozen=True)
class ClassifierTrainConfig:
    steps: int = 2000
    batch_size: int = 4
    lr: float = 3e-2
    momentum: float = 0.9
    weight_decay: float = 1e-4
    eval_every: int = 100
    augment: bool = True
    seed: int = 0

    def __post_init__(self):
        if min(self.steps, self.batch_size, self.eval_every) < 1:
            raise ValueError("classifier steps, batch_size and eval_every must be >= 1")


def _augment(volumes: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    out = []
    for v in volumes:
        if rng.random() < 0.5:
            v = torch.flip(v, dims=[-1])  # left-right (x is the last array axis)
        shift = rng.integers(-1, 2, size=3)  # one voxel (4 mm on the cpu grid); the rolled-in border is background
        v = torch.roll(v, shifts=tuple(int(s) for s in shift), dims=(-3, -2, -1))
        v = v * float(rng.uniform(0.9, 1.1)) + float(rng.uniform(-0.05, 0.05))
        out.append(v)
    return torch.stack(out)


def train_classifier(
    config: ClassifierConfig,
    train_set,
    val_set,
    out: str | Path,
    train: ClassifierTrainConfig | None = None,
    on_eval: Callable[[int, float, float], None] | None = None,
    provenance: dict | None = None,
) -> Path:
    """Train the classifier; the best validation accuracy's weights land in ``out/model``. Returns that folder.

    A state is saved at every evaluation (``out/state``: weights, SGD momentum, the sampler's random state, the best
    accuracy so far); running again with the same ``out`` resumes exactly where the last state left off."""
    train = train or ClassifierTrainConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(train.seed)
    rng = np.random.default_rng(train.seed)
    model = build_classifier(config)
    optimiser = torch.optim.SGD(
        model.parameters(), lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay
    )
    labels = np.array([int(train_set[i][1]) for i in range(len(train_set))])
    by_class = [np.flatnonzero(labels == c) for c in range(len(config.class_names))]
    if any(len(ix) == 0 for ix in by_class):
        missing = [config.class_names[c] for c, ix in enumerate(by_class) if len(ix) == 0]
        raise ValueError(f"the training set has no scan of class(es) {missing}")
    best, step = -1.0, 0
    state = find_state(out)
    if state is not None:
        step, extra = load_state(state, {"model": model}, optimiser)
        rng.bit_generator.state = extra["rng"]
        torch.set_rng_state(torch.tensor(extra["torch_rng"], dtype=torch.uint8))
        best = float(extra["best"])
    metrics = out / "metrics.csv"
    trim_metrics(metrics, step)
    new_log = not metrics.exists()
    with open(metrics, "a", newline="") as log:
        writer = csv.writer(log)
        if new_log:
            writer.writerow(["step", "loss", "val_accuracy"])
        running = []
        while step < train.steps:
            step += 1
            classes = rng.permutation(np.arange(train.batch_size) % len(by_class))  # every class equally often
            idx = [int(rng.choice(by_class[c])) for c in classes]
            volumes = torch.stack([train_set[i][0] for i in idx])
            if train.augment:
                volumes = _augment(volumes, rng)
            model.train()
            loss = F.cross_entropy(model(volumes), torch.as_tensor(classes, dtype=torch.long))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            running.append(float(loss.detach()))
            if step % train.eval_every == 0 or step == train.steps:
                accuracy = evaluate(model, val_set)
                writer.writerow([step, f"{np.mean(running):.5f}", f"{accuracy:.4f}"])
                log.flush()
                if on_eval is not None:
                    on_eval(step, float(np.mean(running)), accuracy)
                running = []
                if accuracy >= best:  # a tie goes to the later, longer-trained weights
                    best = accuracy
                    save_checkpoint(
                        model,
                        config,
                        out / "model",
                        provenance={"step": step, "val_accuracy": accuracy, "train": vars(train), **(provenance or {})},
                    )
                extra = {"rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state().tolist(), "best": best}
                save_state(out / "state", step, {"model": model}, optimiser, extra)
    return out / "model"

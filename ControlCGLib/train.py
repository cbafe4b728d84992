"""Training the diffusion model: Adam, EMA weights, gradient clipping, mixed precision, periodic checkpoints and
exact resume. The loss is :func:`ControlCGLib.training.diffusion_loss`, the one training step.

A run folder holds::

    state/               the latest resumable state: model, EMA and optimiser tensors, RNG states, step
    model/               the EMA weights as a ControlCG model folder (weights.safetensors + config.json)
    metrics.csv          step, loss, learning rate, seconds

Resuming restores everything the next step depends on (weights, optimiser moments, EMA, the data order and the noise
generator), so an interrupted run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import copy
import csv
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .checkpoints import save_checkpoint
from .config import ModelConfig, to_dict
from .diffusion import Schedule
from .networks import ClassConditionalUNet
from .noise import make_generator
from .progress import Cancelled
from .training import diffusion_loss

PRECISIONS = ("auto", "bf16", "no")


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 10_000
    batch_size: int = 2
    lr: float = 1e-4  # the paper's Adam learning rate
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    precision: str = "auto"  # bf16 autocast where the device supports it (CUDA, or a CPU with AVX512-BF16)
    checkpoint_every: int = 500
    seed: int = 0

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError("steps, batch_size and checkpoint_every must be >= 1")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")


def _bf16_ok(device: torch.device) -> bool:
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class _Batches:
    """Seeded epoch permutations of a dataset; position = step, so resuming needs nothing but the step."""

    def __init__(self, dataset, batch_size: int, seed: int):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed

    def batch(self, step: int):
        n = len(self.dataset)
        start = step * self.batch_size
        items = []
        for k in range(start, start + self.batch_size):
            epoch, offset = divmod(k, n)
            order = np.random.default_rng([self.seed, epoch]).permutation(n)
            items.append(self.dataset[int(order[offset])])
        volumes = torch.stack([v for v, _ in items])
        labels = torch.tensor([int(c) for _, c in items], dtype=torch.long)
        return volumes, labels


def _save_state(folder: Path, step: int, model, ema, optimiser, generator: torch.Generator) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp / "model.safetensors"))
    save_file({k: v.contiguous() for k, v in ema.state_dict().items()}, str(tmp / "ema.safetensors"))
    torch.save(optimiser.state_dict(), tmp / "optimiser.pt")  # plain tensors and numbers: loads with weights_only
    save_file({"generator": generator.get_state()}, str(tmp / "rng.safetensors"))
    (tmp / "step.json").write_text(json.dumps({"step": step}))
    if folder.exists():  # replace atomically enough: the old state survives until the new one is complete
        old = folder.with_name(folder.name + ".old")
        folder.rename(old)
        tmp.rename(folder)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        tmp.rename(folder)


def _load_state(folder: Path, model, ema, optimiser, generator: torch.Generator) -> int:
    model.load_state_dict(load_file(str(folder / "model.safetensors")))
    ema.load_state_dict(load_file(str(folder / "ema.safetensors")))
    optimiser.load_state_dict(torch.load(folder / "optimiser.pt", weights_only=True))
    generator.set_state(load_file(str(folder / "rng.safetensors"))["generator"])
    return int(json.loads((folder / "step.json").read_text())["step"])


def train_diffusion(
    config: ModelConfig,
    dataset,
    out: str | Path,
    train: TrainConfig | None = None,
    *,
    device: str | torch.device = "cpu",
    provenance: dict | None = None,
    on_step: Callable[[int, float], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Path:
    """Train (or resume, if ``out/state`` exists) a class-conditional diffusion model on ``dataset`` of
    ``(volume (1, D, H, W) in model range, class index)`` pairs. Returns the folder of the EMA model."""
    train = train or TrainConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    torch.manual_seed(train.seed)
    model = ClassConditionalUNet(config).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    optimiser = torch.optim.Adam(model.parameters(), lr=train.lr)
    generator = make_generator(train.seed)
    step = 0
    if (out / "state").exists():
        step = _load_state(out / "state", model, ema, optimiser, generator)
    schedule = Schedule(config.schedule)
    batches = _Batches(dataset, train.batch_size, train.seed)
    use_bf16 = train.precision == "bf16" or (train.precision == "auto" and _bf16_ok(device))
    metrics = out / "metrics.csv"
    new_log = not metrics.exists()
    began = time.perf_counter()
    model.train()
    with open(metrics, "a", newline="") as log:
        writer = csv.writer(log)
        if new_log:
            writer.writerow(["step", "loss", "lr", "seconds"])
        while step < train.steps:
            if should_stop is not None and should_stop():
                _save_state(out / "state", step, model, ema, optimiser, generator)
                raise Cancelled(f"training stopped at step {step}; run again to resume")
            volumes, labels = batches.batch(step)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = diffusion_loss(model, volumes.to(device), labels.to(device), schedule, generator=generator)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
            optimiser.step()
            with torch.no_grad():
                for e, p in zip(ema.parameters(), model.parameters()):
                    e.lerp_(p, 1 - train.ema_decay)
                for e, b in zip(ema.buffers(), model.buffers()):
                    e.copy_(b)
            step += 1
            value = float(loss.detach())
            writer.writerow([step, f"{value:.6f}", train.lr, f"{time.perf_counter() - began:.2f}"])
            if on_step is not None:
                on_step(step, value)
            if step % train.checkpoint_every == 0 or step == train.steps:
                log.flush()
                _save_state(out / "state", step, model, ema, optimiser, generator)
                save_checkpoint(
                    ema,
                    config,
                    out / "model",
                    provenance={"steps": step, "train": to_dict(train), **(provenance or {})},
                )
    return out / "model"

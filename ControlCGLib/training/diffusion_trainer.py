"""Training the diffusion model: Adam, EMA weights, gradient clipping, mixed precision, periodic checkpoints and
exact resume. The loss is :func:`ControlCGLib.training.diffusion_loss`, the one training step.

A run folder holds::

    state/               the latest resumable state (training/resume.py): model, EMA and optimiser tensors, step
    model/               the EMA weights as a ControlCG model folder (weights.safetensors + config.json)
    metrics.csv          step, loss, learning rate, seconds
    held_out.csv         step, the EMA model's loss on held-out subjects (fixed noise and timesteps) at each checkpoint

Resuming restores everything the next step depends on (weights, optimiser moments, EMA; the data order and the noise
are functions of (seed, rank, step)), so an interrupted run continues exactly as an uninterrupted one would.

Under ``torchrun`` (one process per GPU, or several CPU processes on the gloo backend) the model is wrapped in
PyTorch's DistributedDataParallel: every rank takes its own share of each global batch and draws its own noise,
gradients are averaged, rank 0 alone writes checkpoints and logs.
"""

from __future__ import annotations

import copy
import csv
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..model.checkpoints import save_checkpoint
from ..model.config import ModelConfig, to_dict
from ..model.networks import ClassConditionalUNet
from ..model.warm_start import warm_start
from ..progress import Cancelled
from ..sampling.noise import make_generator
from ..sampling.schedule import Schedule
from .loss import diffusion_loss
from .resume import find_state, load_state, save_state, trim_metrics

PRECISIONS = ("auto", "bf16", "no")
HELD_OUT_ITEMS = 16  # held-out volumes scored at each checkpoint: one forward pass each, no gradient


@dataclass
class TrainResult:
    folder: Path  # the EMA model folder (written by rank 0)
    model: ClassConditionalUNet  # this rank's trained weights
    ema: ClassConditionalUNet
    seen: list[int]  # dataset indices this rank trained on, in order


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
    # Train only the finest level's way up (its up block, the up-sampling into it, the output convolution): every
    # coarser weight frozen, so the backward pass never enters the coarser levels. The first stage of a network grown
    # by a finer level (model/warm_start.py): its inner levels already know the coarser grid.
    finest_level_only: bool = False

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

    def indices(self, step: int, rank: int = 0, world: int = 1) -> list[int]:
        """Dataset indices of this rank's share of the global batch number ``step``."""
        n = len(self.dataset)
        start = (step * world + rank) * self.batch_size
        out = []
        for k in range(start, start + self.batch_size):
            epoch, offset = divmod(k, n)
            out.append(int(np.random.default_rng([self.seed, epoch]).permutation(n)[offset]))
        return out

    def batch(self, indices: list[int]):
        items = [self.dataset[i] for i in indices]
        volumes = torch.stack([v for v, _ in items])
        labels = torch.tensor([int(c) for _, c in items], dtype=torch.long)
        return volumes, labels


def _share_state(step: int, modules: dict, optimiser, device: torch.device) -> int:
    """Broadcast rank 0's step, weights and optimiser state (tensors only, between our own processes)."""
    payload = [None]
    if torch.distributed.get_rank() == 0 and step > 0:
        payload = [
            {
                "step": step,
                "modules": {k: {n: t.cpu() for n, t in m.state_dict().items()} for k, m in modules.items()},
                "optimiser": optimiser.state_dict(),
            }
        ]
    torch.distributed.broadcast_object_list(payload, src=0, device=device if device.type == "cuda" else None)
    if payload[0] is None:
        return step
    if torch.distributed.get_rank() != 0:
        for k, m in modules.items():
            m.load_state_dict(payload[0]["modules"][k])
        optimiser.load_state_dict(payload[0]["optimiser"])
    return int(payload[0]["step"])


def finest_level(model: ClassConditionalUNet) -> set[str]:
    """Names of the parameters on the finest level's way up: the last up block, the up-sampling of the block
    before it and the output convolution."""
    n = len(model.unet.up_blocks)
    prefixes = (f"unet.up_blocks.{n - 1}.", f"unet.up_blocks.{n - 2}.upsampler.", "unet.out.")
    return {name for name, _ in model.named_parameters() if name.startswith(prefixes)}


def _log_held_out(path: Path, step: int, loss: float) -> None:
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        writer = csv.writer(f)
        if new:
            writer.writerow(["step", "held_out_loss"])
        writer.writerow([step, f"{loss:.6f}"])


def _step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    return make_generator(int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0]))


def held_out_loss(model, dataset, config: ModelConfig, device: torch.device, use_bf16: bool, seed: int = 0) -> float:
    """Mean conditional loss over up to :data:`HELD_OUT_ITEMS` volumes, each with its own fixed timestep and noise,
    so that every checkpoint of a run (and of a resumed one) is scored on the same draws."""
    schedule = Schedule(config.schedule)
    losses = []
    was_training = model.training
    model.eval()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
        for i in range(min(len(dataset), HELD_OUT_ITEMS)):
            volume, label = dataset[i]
            generator = make_generator(int(np.random.SeedSequence([seed, 1_000_003, i]).generate_state(1)[0]))
            labels = torch.tensor([int(label)], dtype=torch.long, device=device)
            loss = diffusion_loss(
                model, volume[None].to(device), labels, schedule, generator=generator, p_uncond=0.0, config=config
            )
            losses.append(float(loss))
    model.train(was_training)
    return float(np.mean(losses))


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
    init_from: str | Path | None = None,
    held_out=None,
) -> TrainResult:
    """Train (or resume, if ``out/state`` exists) a class-conditional diffusion model on ``dataset`` of
    ``(volume (1, D, H, W) in model range, class index)`` pairs. ``init_from`` (a model folder) gives a fresh run
    its starting weights (:func:`~ControlCGLib.model.warm_start.warm_start`); a resumed run ignores it.
    ``held_out`` (a dataset of the same kind, other subjects): scored at every checkpoint into held_out.csv."""
    train = train or TrainConfig()
    out = Path(out)
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if distributed else 0
    world = torch.distributed.get_world_size() if distributed else 1
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device)
    torch.manual_seed(train.seed)  # same initial weights on every rank
    model = ClassConditionalUNet(config).to(device)
    if init_from is not None and find_state(out) is None:
        warm_start(model, init_from)
    ema = copy.deepcopy(model).requires_grad_(False)
    if train.finest_level_only:
        trained = finest_level(model)
        for name, p in model.named_parameters():
            p.requires_grad_(name in trained)
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=train.lr)
    step = 0
    modules = {"model": model, "ema": ema}
    state = find_state(out) if rank == 0 else None
    if state is not None:
        step, _ = load_state(state, modules, optimiser)
    if distributed:  # rank 0's state reaches every rank, also on nodes without a shared filesystem
        step = _share_state(step, modules, optimiser, device)
    net = model
    if distributed:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    schedule = Schedule(config.schedule)
    batches = _Batches(dataset, train.batch_size, train.seed)
    use_bf16 = train.precision == "bf16" or (train.precision == "auto" and _bf16_ok(device))
    seen: list[int] = []
    metrics = out / "metrics.csv"
    log = None
    offset = 0.0  # seconds spent in earlier sittings, so that the log's clock is the run's total
    if rank == 0:
        offset = trim_metrics(metrics, step, "seconds")
        new_log = not metrics.exists()
        log = open(metrics, "a", newline="")  # noqa: SIM115 (closed in finally)
        writer = csv.writer(log)
        if new_log:
            writer.writerow(["step", "loss", "lr", "seconds"])
    began = time.perf_counter() - offset
    held_out_log = out / "held_out.csv"
    if rank == 0 and held_out is not None:
        trim_metrics(held_out_log, step)
        if step == 0:  # where the run starts: a warm start's own quality
            _log_held_out(held_out_log, 0, held_out_loss(ema, held_out, config, device, use_bf16, train.seed))
    model.train()
    try:
        while step < train.steps:
            if should_stop is not None and should_stop():
                if rank == 0:
                    save_state(out / "state", step, modules, optimiser)
                raise Cancelled(f"training stopped at step {step}; run again to resume")
            indices = batches.indices(step, rank, world)
            seen += indices
            volumes, labels = batches.batch(indices)
            generator = _step_generator(train.seed, rank, step)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = diffusion_loss(
                    net, volumes.to(device), labels.to(device), schedule, generator=generator, config=config
                )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], train.grad_clip)
            optimiser.step()
            decay = min(train.ema_decay, (1 + step) / (10 + step))  # warm-up: early EMA is not the random init
            with torch.no_grad():
                for e, p in zip(ema.parameters(), model.parameters()):
                    e.lerp_(p, 1 - decay)
                for e, b in zip(ema.buffers(), model.buffers()):
                    e.copy_(b)
            step += 1
            value = float(loss.detach())
            if rank == 0:
                writer.writerow([step, f"{value:.6f}", train.lr, f"{time.perf_counter() - began:.2f}"])
            if on_step is not None:
                on_step(step, value)
            if step % train.checkpoint_every == 0 or step == train.steps:
                if rank == 0:
                    log.flush()
                    save_state(out / "state", step, modules, optimiser)
                    save_checkpoint(
                        ema,
                        config,
                        out / "model",
                        provenance={"steps": step, "ranks": world, "train": to_dict(train), **(provenance or {})},
                    )
                    if held_out is not None:
                        score = held_out_loss(ema, held_out, config, device, use_bf16, train.seed)
                        _log_held_out(held_out_log, step, score)
                if distributed:
                    torch.distributed.barrier()
    finally:
        if log is not None:
            log.close()
    return TrainResult(out / "model", model, ema, seen)

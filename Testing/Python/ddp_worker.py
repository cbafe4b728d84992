"""Run under torchrun by test_distributed.py: a few DDP steps on the tiny model, then each rank writes its weights and
the data it saw."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import tiny_config  # noqa: E402

from ControlCGLib.training.diffusion_trainer import TrainConfig, train_diffusion  # noqa: E402
from ControlCGLib.training.distributed import init_from_env, shutdown  # noqa: E402


class Data:
    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return torch.rand(1, 8, 8, 8, generator=g) * 2 - 1, i % 2


def run(out: Path, steps: int = 3, per_rank_folders: bool = False) -> None:
    """``per_rank_folders``: each rank gets its own run folder, as nodes without a shared filesystem would."""
    torch.set_num_threads(1)
    rank, world = init_from_env("cpu")
    result = train_diffusion(
        tiny_config(),
        Data(),
        out / (f"node{rank}" if per_rank_folders else "run"),
        TrainConfig(steps=steps, batch_size=2, lr=1e-3, precision="no", checkpoint_every=2),
    )
    save_file({k: v.contiguous() for k, v in result.model.state_dict().items()}, str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps({"world": world, "seen": result.seen}))
    shutdown()


if __name__ == "__main__":
    run(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 3, "--per-rank-folders" in sys.argv)

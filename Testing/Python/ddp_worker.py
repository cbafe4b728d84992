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

from ControlCGLib.distributed import init_from_env, shutdown  # noqa: E402
from ControlCGLib.train import TrainConfig, train_diffusion  # noqa: E402


class Data:
    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return torch.rand(1, 8, 8, 8, generator=g) * 2 - 1, i % 2


def run(out: Path) -> None:
    torch.set_num_threads(1)
    rank, world = init_from_env("cpu")
    result = train_diffusion(
        tiny_config(),
        Data(),
        out / "run",
        TrainConfig(steps=3, batch_size=2, lr=1e-3, precision="no", checkpoint_every=100),
    )
    save_file({k: v.contiguous() for k, v in result.model.state_dict().items()}, str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps({"world": world, "seen": result.seen}))
    shutdown()


if __name__ == "__main__":
    run(Path(sys.argv[1]))

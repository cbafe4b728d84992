"""Distributed data parallel through torchrun, two CPU processes on gloo: same weights, different data."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

WORKER = Path(__file__).resolve().parent / "ddp_worker.py"


def _torchrun(*args) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_gloo_ranks_hold_identical_weights_and_saw_different_data(tmp_path):
    _torchrun(str(tmp_path))
    a, b = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert seen[0]["world"] == seen[1]["world"] == 2
    assert len(seen[0]["seen"]) == len(seen[1]["seen"]) == 6
    assert sorted(seen[0]["seen"][:4] + seen[1]["seen"][:4]) == list(range(8))  # the first epoch, split between ranks
    assert seen[0]["seen"] != seen[1]["seen"]
    # training moved the weights away from the shared initialisation, identically on both ranks
    assert (tmp_path / "run" / "metrics.csv").exists() and (tmp_path / "run" / "model" / "config.json").exists()


def test_resume_without_a_shared_filesystem(tmp_path):
    """Rank 0 alone holds the saved state (its own disk); after resuming, both ranks equal an uninterrupted run."""
    _torchrun(str(tmp_path / "straight"), "3")
    _torchrun(str(tmp_path / "split"), "2", "--per-rank-folders")
    assert (tmp_path / "split" / "node0" / "state").exists() and not (tmp_path / "split" / "node1").exists()
    _torchrun(str(tmp_path / "split"), "3", "--per-rank-folders")
    straight = load_file(str(tmp_path / "straight" / "rank0.safetensors"))
    for r in (0, 1):
        resumed = load_file(str(tmp_path / "split" / f"rank{r}.safetensors"))
        assert all(torch.equal(straight[k], resumed[k]) for k in straight)

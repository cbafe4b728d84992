"""Resumable training states, shared by the diffusion and classifier trainers.

A state folder holds each module's tensors (safetensors), the optimiser's (plain tensors and numbers, loaded with
``torch.load(weights_only=True)``) and ``step.json`` (the step plus any JSON-able extras, e.g. a random generator's
state). Saving is atomic: the new state is complete before the old one goes, and a crash between the two renames
leaves ``state.old``, which :func:`find_state` picks up.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def _remove_folder(folder: Path) -> None:
    if folder.exists():
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()


def save_state(
    folder: Path, step: int, modules: dict[str, torch.nn.Module], optimiser, extra: dict[str, Any] | None = None
) -> None:
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    old = folder.with_name(folder.name + ".old")
    _remove_folder(tmp)  # leftovers of a crash in an earlier save
    _remove_folder(old)
    tmp.mkdir(parents=True)
    for name, module in modules.items():
        save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(tmp / f"{name}.safetensors"))
    torch.save(optimiser.state_dict(), tmp / "optimiser.pt")
    (tmp / "step.json").write_text(json.dumps({"step": step, **(extra or {})}))
    if folder.exists():  # the old state survives until the new one is complete
        folder.rename(old)
        tmp.rename(folder)
        _remove_folder(old)
    else:
        tmp.rename(folder)


def find_state(out: Path) -> Path | None:
    """``out/state``, or ``out/state.old`` after a crash between the two renames of a save; None for a fresh run."""
    for name in ("state", "state.old"):
        if (Path(out) / name).exists():
            return Path(out) / name
    return None


def load_state(folder: Path, modules: dict[str, torch.nn.Module], optimiser) -> tuple[int, dict[str, Any]]:
    """Restore modules and optimiser in place; returns (step, extras)."""
    for name, module in modules.items():
        module.load_state_dict(load_file(str(folder / f"{name}.safetensors")))
    optimiser.load_state_dict(torch.load(folder / "optimiser.pt", weights_only=True, map_location="cpu"))
    info = json.loads((folder / "step.json").read_text())
    return int(info.pop("step")), info


def trim_metrics(metrics: Path, step: int, seconds_column: str | None = None) -> float:
    """Drop log rows past the resumed ``step`` (written after the last saved state, and about to be redone); return
    the last kept value of ``seconds_column`` (0 without one), so that a resumed log keeps a running clock."""
    if not metrics.exists():
        return 0.0
    with open(metrics, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return 0.0
    kept = [r for r in rows[1:] if r and int(r[0]) <= step]
    with open(metrics, "w", newline="") as f:
        csv.writer(f).writerows([rows[0], *kept])
    if seconds_column is None or not kept:
        return 0.0
    return float(kept[-1][rows[0].index(seconds_column)])

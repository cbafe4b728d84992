"""Checkpoints are data: ``weights.safetensors`` plus ``config.json`` in one folder; loading never unpickles.

A model folder holds::

    config.json           the ModelConfig or ClassifierConfig that rebuilds the network (plus provenance)
    weights.safetensors   its state dict
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .. import __version__
from ..hashing import file_sha256  # noqa: F401  (the command line hashes the weights it loads through here)
from .config import ClassifierConfig, ConfigError, ModelConfig, read_model_config, write_model_config
from .networks import ClassConditionalUNet, build_classifier

WEIGHTS = "weights.safetensors"


class CheckpointError(ValueError):
    """A model folder that cannot be loaded; the message says which file and why."""


def save_checkpoint(model: nn.Module, config, folder: str | Path, provenance: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights and ``config`` into ``folder``, with provenance: the caller's (data, steps, ...)
    plus the date and the code version."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt"})
    stamp = {"saved": datetime.now(UTC).isoformat(timespec="seconds"), "code_version": __version__}
    write_model_config(config, folder, {**stamp, **(provenance or {})})
    return folder


def read_checkpoint_config(folder: str | Path) -> tuple[ModelConfig | ClassifierConfig, dict[str, Any]]:
    """(configuration, provenance) of a model folder (model/config.py reads it), refused as a checkpoint error."""
    try:
        return read_model_config(folder)
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None


def load_checkpoint(folder: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the network a folder describes and load its weights (strictly: every tensor, every shape)."""
    folder = Path(folder)
    config, provenance = read_checkpoint_config(folder)
    model = ClassConditionalUNet(config) if isinstance(config, ModelConfig) else build_classifier(config)
    model.config = config
    model.provenance = provenance  # what it was trained on (data, steps, anatomies): the evaluation reads it
    path = folder / WEIGHTS
    if not path.exists():
        raise CheckpointError(f"{path} is missing")
    try:
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc})") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if extra:
            parts.append(f"{len(extra)} unexpected (e.g. {extra[:3]})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} with wrong shapes (e.g. {k}: {tuple(state[k].shape)} vs {tuple(expected[k].shape)})"
            )
        raise CheckpointError(f"{path} does not match its config.json: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)
    return model.to(map_location).eval()

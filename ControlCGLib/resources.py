"""Where the product's files live: the ``Resources/`` folder (``$CONTROLCG_RESOURCES`` or beside ``ControlCGLib/``)
with the template, the embedded default models and the bundled sample T1, so that nothing is downloaded at run time.

The embedded default is a diffusion model and a classifier trained on the simulated cohort, small enough for a laptop
CPU, and a sample T1. Plain Python (no numpy, torch or SimpleITK): the Slicer panel reads paths before anything is
installed.

``Resources/Models/controlcg-cpu/TRAINING.md`` records how they were made (command, seed, steps, wall time, loss
curve); ``Resources/Sample/README.md`` how the sample was made.
"""

from __future__ import annotations

import os
from pathlib import Path

MODEL_NAME = "controlcg-cpu"


def resources_dir() -> Path:
    """The product's Resources folder: ``$CONTROLCG_RESOURCES``, or ``Resources/`` beside ``ControlCGLib/``."""
    env = os.environ.get("CONTROLCG_RESOURCES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent / "Resources"


def template_dir() -> Path:
    return resources_dir() / "Template"


def anatomies_dir() -> Path:
    """The base anatomies of the simulated cohort (data/anatomies.py)."""
    return resources_dir() / "Anatomies"


def models_dir() -> Path:
    return resources_dir() / "Models" / MODEL_NAME


def diffusion_dir() -> Path:
    """Folder of the embedded diffusion model (config.json + weights.safetensors)."""
    return _existing(models_dir() / "diffusion")


def classifier_dir() -> Path:
    """Folder of the embedded diagnostic classifier (the one whose decisions the counterfactuals explain)."""
    return _existing(models_dir() / "classifier")


def judge_dir() -> Path:
    """An independently trained classifier (other width and seed) that judges the flip in the evaluation."""
    return _existing(models_dir() / "judge")


def sample_scan() -> Path:
    """The bundled sample T1: a simulated cognitively normal subject, not in MNI space (registration is exercised)."""
    return _existing(resources_dir() / "Sample" / "sample_T1.nii.gz")


def _existing(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: the Resources folder is incomplete (set CONTROLCG_RESOURCES to a full copy, "
            "or pass --model/--input explicitly)"
        )
    return path

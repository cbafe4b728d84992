"""Shared fixtures: tiny models with non-zero weights (MONAI zero-initialises output layers, so an untrained model
predicts exactly 0 and would hide bugs), and the trained toy model (trained once per session)."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch

from ControlCGLib.model.config import ModelConfig, NoiseConfig, ScheduleConfig, UNetConfig
from ControlCGLib.model.networks import ClassConditionalUNet

torch.set_num_threads(2)
# The command line keeps traced memory estimates in the user's cache folder (sampling/memory.py); tests use their own,
# inherited by the commands they launch.
os.environ["CONTROLCG_CACHE_DIR"] = tempfile.mkdtemp(prefix="controlcg-test-cache-")


def tiny_config(**changes) -> ModelConfig:
    base = ModelConfig(
        name="tiny",
        grid=(8, 8, 8),
        unet=UNetConfig(
            channels=(8, 8, 16), attention_levels=(False, True, True), norm_num_groups=4, num_head_channels=4
        ),
        context_dim=8,
        schedule=ScheduleConfig(num_train_timesteps=100),
        noise=NoiseConfig(kind="pyramid", discount=0.5, levels=2),
    )
    return base.replace(**changes)


def tiny_model_files(folder, grid=(8, 12, 8)):
    """A tiny diffusion model, a tiny classifier and a simulated CN subject's T1 (in MNI space: --preprocessed) in
    ``folder`` as model/, classifier/ and t1.nii.gz, for command-line tests."""
    import SimpleITK as sitk

    from ControlCGLib.data.simulator import COHORT_V1, CohortSimulator
    from ControlCGLib.model.checkpoints import save_checkpoint
    from ControlCGLib.model.config import ClassifierConfig
    from ControlCGLib.model.networks import build_classifier

    cfg = tiny_config(grid=grid)
    torch.manual_seed(0)
    save_checkpoint(randomise(ClassConditionalUNet(cfg), std=0.05), cfg, folder / "model")
    ccfg = ClassifierConfig(grid=grid, init_features=4, growth_rate=4, block_config=(1,))
    save_checkpoint(build_classifier(ccfg).eval(), ccfg, folder / "classifier")
    sim = CohortSimulator(COHORT_V1)
    _, image, _, _ = sim.subject(0, seed=0, label="CN")
    scan = sitk.GetImageFromArray(image)
    scan.CopyInformation(sim.anatomy.reference)
    sitk.WriteImage(scan, str(folder / "t1.nii.gz"))
    return scan


def speed_benchmark():
    """benchmarks/speed.py as a module (it is a script, not part of the package)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "speed.py"
    spec = importlib.util.spec_from_file_location("speed_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def randomise(model: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def count_unet_calls(monkeypatch, model: ClassConditionalUNet) -> list:
    """Patch ``model``'s UNet to record one entry per forward pass (the cost the sampler's sharing saves)."""
    calls = []
    original = model.unet.forward

    def counted(x, t, **kw):
        calls.append(1)
        return original(x, t, **kw)

    monkeypatch.setattr(model.unet, "forward", counted)
    return calls


@pytest.fixture
def tiny_model() -> ClassConditionalUNet:
    torch.manual_seed(0)
    return randomise(ClassConditionalUNet(tiny_config()))


@pytest.fixture
def tiny_input() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.rand((8, 8, 8), generator=g) * 2 - 1


@pytest.fixture(scope="session")
def toy_model():
    from ControlCGLib.training.toy import train_toy

    return train_toy(steps=400, seed=0).model


@pytest.fixture(scope="session")
def simulated_manifest(tmp_path_factory):
    """A 6-subject simulated cohort on the cpu grid, shared by the command-line training tests."""
    from ControlCGLib.data.simulator import write_cohort

    return write_cohort(tmp_path_factory.mktemp("cohort"), 6, grid=(40, 48, 40), seed=3)


@pytest.fixture(scope="session")
def realistic_cohort(tmp_path_factory):
    """4 simulated subjects inside Colin27's head on oblique, anisotropic 3 mm grids (2 CN, 2 AD: one train, one
    test each), plus a T2-like scan, a slab and a truncated file (data/realistic_cohort.py): cohort.csv."""
    from ControlCGLib.data.realistic_cohort import write_realistic_cohort

    return write_realistic_cohort(tmp_path_factory.mktemp("realistic"), n=4, seed=1, spacing=(3.0, 3.0, 3.0))


#: The grid the prepared realistic cohort is on: the cpu preset's, so that ``train diffusion --preset cpu`` reads it.
PREPARED_GRID = (40, 48, 40)


@pytest.fixture(scope="session")
def prepared_realistic(tmp_path_factory, realistic_cohort):
    """The realistic cohort through ``prepare_cohort`` uninterrupted, on the cpu preset's grid: the output folder."""
    from ControlCGLib.data.preparation import PrepareSettings, prepare_cohort
    from ControlCGLib.model.config import preset

    out = tmp_path_factory.mktemp("prepared")
    settings = PrepareSettings(grid=PREPARED_GRID, intensity=preset("cpu").intensity)
    prepare_cohort(realistic_cohort, out, settings)
    return out

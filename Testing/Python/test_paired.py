"""The paired counterfactual: the class change alone, shown on the patient's scan."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from ControlCGLib.sampling.sampler import counterfactual
from ControlCGLib.sampling.settings import SamplingConfig

FAST = SamplingConfig(steps=4)


def test_a_paired_run_is_the_target_run_plus_a_source_run_from_the_same_noise(tiny_model, tiny_input):
    paired = counterfactual(tiny_model, tiny_input, "AD", (0.0, 2.0), FAST, seed=3, source="CN")
    target = counterfactual(tiny_model, tiny_input, "AD", (0.0, 2.0), FAST, seed=3)
    source = counterfactual(tiny_model, tiny_input, "CN", (0.0, 2.0), FAST, seed=3)
    for w in (0.0, 2.0):
        torch.testing.assert_close(paired[w], target[w], rtol=0, atol=1e-6)
        torch.testing.assert_close(paired.source_images[w], source[w], rtol=0, atol=1e-6)
        assert float(paired.paired_change(w).abs().max()) > 0
    again = counterfactual(tiny_model, tiny_input, "AD", (0.0, 2.0), FAST, seed=3, source="CN")
    assert torch.equal(again.paired_change(2.0), paired.paired_change(2.0))  # same seed, same result
    assert paired.settings["source"] == "CN"


def test_toward_its_own_class_the_paired_change_is_exactly_zero(tiny_model, tiny_input):
    own = counterfactual(tiny_model, tiny_input, "CN", 2.0, FAST, seed=0, source="CN")
    assert torch.count_nonzero(own.paired_change(2.0)) == 0
    with pytest.raises(ValueError, match="not paired"):
        counterfactual(tiny_model, tiny_input, "CN", 2.0, FAST, seed=0).paired_change(2.0)


def test_pairing_shares_the_reference_pass(monkeypatch, tiny_model, tiny_input):
    from conftest import count_unet_calls

    calls = count_unet_calls(monkeypatch, tiny_model)
    counterfactual(tiny_model, tiny_input, "AD", 2.0, FAST, seed=0)
    unpaired = len(calls)
    calls.clear()
    counterfactual(tiny_model, tiny_input, "AD", 2.0, FAST, seed=0, source="CN")
    assert unpaired == 4 * 3  # per step: reference + conditional + unconditional
    # one reference shared, two passes per class; at the first step both classes start from the same x_t and share
    # its unconditional pass
    assert len(calls) == 4 * 5 - 1


def test_the_pipeline_toward_the_scans_own_class_returns_the_scan(tmp_path):
    from conftest import tiny_model_files

    from ControlCGLib.model.checkpoints import load_checkpoint
    from ControlCGLib.pipeline import run_counterfactual

    scan = tiny_model_files(tmp_path)
    model = load_checkpoint(tmp_path / "model")
    run = run_counterfactual(model, scan, "CN", (2.0,), FAST, preprocessed=True, source="CN")
    native = sitk.GetArrayFromImage(sitk.Cast(scan, sitk.sitkFloat32))
    assert np.array_equal(sitk.GetArrayFromImage(run.native[2.0].detail), native)
    assert np.array_equal(run.model_grid[2.0], run.prepared.model_input)
    assert not np.array_equal(run.raw[2.0], run.prepared.model_input)  # the raw model output is still there
    toward = run_counterfactual(model, scan, "AD", (2.0,), FAST, preprocessed=True, source="CN")
    assert np.abs(toward.shown_change(2.0)).max() > 0
    with pytest.raises(ValueError, match="needs a classifier"):
        run_counterfactual(model, scan, "AD", (2.0,), FAST, preprocessed=True, source="auto")


def test_the_brain_mask_stays_inside_the_head_of_an_oblique_whole_head_scan():
    """Colin27's head with its skull, rotated and resampled to 1.2 x 1.2 x 3 mm: the template's mapped mask leaves
    the head (37 mL of it, measured); the patient's own mask does not, and keeps the ventricles."""
    from ControlCGLib.data.anatomies import head_scan
    from ControlCGLib.imaging.brain_mask import head_mask
    from ControlCGLib.imaging.geometry import resample
    from ControlCGLib.imaging.native_space import prepare

    head = sitk.ReadImage(str(head_scan()))
    centre = np.array(head.TransformContinuousIndexToPhysicalPoint([s / 2 for s in head.GetSize()]))
    rotation = sitk.Euler3DTransform()
    rotation.SetRotation(0.26, 0.17, 0.0)
    direction = np.array(rotation.GetMatrix()).reshape(3, 3)
    grid = sitk.Image([int(head.GetSize()[0] * 2 / 1.2), int(head.GetSize()[1] * 2 / 1.2), 60], sitk.sitkFloat32)
    grid.SetSpacing((1.2, 1.2, 3.0))
    grid.SetDirection(direction.ravel().tolist())
    grid.SetOrigin((centre - direction @ (np.array(grid.GetSize()) * np.array(grid.GetSpacing()) / 2)).tolist())
    scan = resample(head, grid)
    prepared = prepare(scan, (40, 48, 40))
    result = prepared.to_native(prepared.model_input + 0.1 * prepared.mask)  # a change everywhere in the brain
    mask = sitk.GetArrayFromImage(result.mask) > 0
    inside = sitk.GetArrayFromImage(head_mask(scan)) > 0
    saliency = np.abs(sitk.GetArrayFromImage(result.saliency))
    assert (mask & ~inside).sum() < 0.0005 * mask.sum()  # measured 33 voxels (skull-base cisterns) of 470,000
    assert saliency[~inside].sum() < 0.0005 * saliency.sum()
    assert 1000 < mask.sum() * np.prod(scan.GetSpacing()) / 1000 < 1900  # mL: a brain, not the template's box
    filled = sitk.GetArrayFromImage(sitk.BinaryFillhole(result.mask)) > 0  # the ventricles (dark) are brain
    assert (filled & ~mask).sum() < 0.002 * mask.sum()


def test_mask_blending_keeps_the_input_outside_the_changing_region(tiny_model, tiny_input):
    """Blending (an option, sampling/blending.py): where the mask is zero the paired change is exactly zero, an
    unpaired output is the input there, and a blended run repeats bit for bit."""
    import dataclasses

    from ControlCGLib.model.config import ConfigError, from_dict, to_dict
    from ControlCGLib.sampling.settings import BlendConfig

    sampling = dataclasses.replace(FAST, blend=BlendConfig(threshold=0.5, start=0.0))
    paired = counterfactual(tiny_model, tiny_input, "AD", 2.0, sampling, seed=1, source="CN")
    plain = counterfactual(tiny_model, tiny_input, "AD", 2.0, FAST, seed=1, source="CN")
    zero = paired.paired_change(2.0) == 0
    assert 0 < float(zero.float().mean()) < 1 and not bool((plain.paired_change(2.0) == 0).any())
    again = counterfactual(tiny_model, tiny_input, "AD", 2.0, sampling, seed=1, source="CN")
    assert torch.equal(again.paired_change(2.0), paired.paired_change(2.0))
    unpaired = counterfactual(tiny_model, tiny_input, "AD", 2.0, sampling, seed=1)
    kept = unpaired[2.0] == tiny_input.reshape(unpaired[2.0].shape)
    assert 0 < float(kept.float().mean()) < 1
    assert from_dict(SamplingConfig, to_dict(sampling)) == sampling
    with pytest.raises(ConfigError, match="blend.threshold"):
        BlendConfig(threshold=1.5)

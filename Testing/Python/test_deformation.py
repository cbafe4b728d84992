"""The class change as a deformation of the patient's own scan: invertible, exact where nothing changes, volumes
that add up, the scan's own intensities on the scan's own grid."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ControlCGLib.imaging.deformation import (
    Warp,
    estimate_warp,
    identity_warp,
    log_volume_change,
    volume,
    warp_array,
    warped_volume,
)
from ControlCGLib.imaging.geometry import same_geometry
from ControlCGLib.regions import regional_volumes

FLIPPED = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # the model grid's direction (the template's)


def _grid(n: int = 40, spacing: float = 2.0, direction=FLIPPED) -> sitk.Image:
    grid = sitk.Image([n] * 3, sitk.sitkFloat32)
    grid.SetSpacing((spacing,) * 3)
    grid.SetDirection(direction)
    half = np.reshape(direction, (3, 3)) @ np.full(3, (n - 1) * spacing / 2)
    grid.SetOrigin(tuple(-half))
    return grid


def _points(grid: sitk.Image) -> np.ndarray:
    """(z, y, x, 3) physical points (x, y, z) of a grid's voxels."""
    nx, ny, nz = grid.GetSize()
    z, y, x = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    index = np.stack([x, y, z], axis=-1) * np.asarray(grid.GetSpacing())
    direction = np.asarray(grid.GetDirection()).reshape(3, 3)
    return np.asarray(grid.GetOrigin()) + index @ direction.T


def radial_warp(grid: sitk.Image, centre, scale: float, inner: float, outer: float) -> Warp:
    """phi(x) = c + (x - c) / scale within ``inner`` mm of ``centre``, tapering to the identity at ``outer``: a ball
    of radius r < inner * scale in the input appears with radius r * scale in the counterfactual."""
    d = _points(grid) - np.asarray(centre, float)
    r = np.linalg.norm(d, axis=-1)
    f = np.clip((r - inner) / (outer - inner), 0.0, 1.0)
    factor = (1.0 - f) / scale + f
    field = sitk.GetImageFromArray((d * (factor - 1.0)[..., None]).astype(np.float64), isVector=True)
    field.CopyInformation(grid)
    return Warp(field)


def ball(grid: sitk.Image, centre, radius: float) -> sitk.Image:
    """A ball's fraction map, its border antialiased by 4^3 supersampling."""
    offsets = (np.arange(4) + 0.5) / 4 - 0.5
    points = _points(grid)
    spacing = np.asarray(grid.GetSpacing())
    inside = np.zeros(points.shape[:3], np.float32)
    for dz in offsets:
        for dy in offsets:
            for dx in offsets:
                p = points + np.array([dx, dy, dz]) * spacing
                inside += np.linalg.norm(p - np.asarray(centre), axis=-1) < radius
    img = sitk.GetImageFromArray(inside / 64.0)
    img.CopyInformation(grid)
    return img


@pytest.mark.parametrize("scale", [0.93, 1.25])  # a hippocampus shrinking 20 %, a ventricle growing 95 %
def test_regional_volumes_of_a_known_deformation_are_recovered_within_two_percent(scale):
    grid = _grid()
    centre = (3.3, -2.1, 1.7)
    warp = radial_warp(grid, centre, scale, inner=18.0, outer=32.0)
    region = ball(grid, centre, 10.0)
    assert volume(region) == pytest.approx(4 / 3 * np.pi * 10.0**3, rel=0.01)
    shown = warped_volume(region, warp.transform())
    assert shown / volume(region) == pytest.approx(scale**3, rel=0.02)
    # the log volume change at the ball's centre is 3 log(scale); the warp is invertible everywhere
    inside = np.linalg.norm(_points(grid) - np.asarray(centre), axis=-1) < 8.0
    assert np.allclose(log_volume_change(warp)[inside], 3 * np.log(scale), atol=1e-3)
    assert warp.jacobian().min() > 0
    # in mL through a registration that doubles every length: 8x the volume, the same percentage change
    doubling = sitk.AffineTransform(3)
    doubling.SetMatrix((2.0, 0, 0, 0, 2.0, 0, 0, 0, 2.0))
    volumes = regional_volumes(warp, doubling, {"ball": region})["ball"]
    assert volumes.input_ml == pytest.approx(8 * volume(region) / 1000)
    assert volumes.counterfactual_ml == pytest.approx(volumes.input_ml * scale**3, rel=0.02)
    assert volumes.change_percent == pytest.approx(100 * (scale**3 - 1), abs=2.0)  # percentage points


@pytest.mark.parametrize("direction", [FLIPPED, (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)])
def test_demons_recovers_a_growing_dark_space_invertibly(direction):
    """A dark ball (a ventricle) in bright tissue grows by a known warp; the estimated warp grows it, by a volume
    close to the truth, and never folds, whichever way the grid's axes point."""
    grid = _grid(32, 4.0, direction)
    centre = (2.0, 0.0, -2.0)
    truth = radial_warp(grid, centre, 1.2, inner=14.0, outer=40.0)
    source = 0.8 - 0.6 * sitk.GetArrayFromImage(ball(grid, centre, 12.0))
    target = warp_array(source, truth, grid)
    warp = estimate_warp(source, target, grid)
    assert warp.jacobian().min() > 0
    region = ball(grid, centre, 12.0)
    true_ratio = warped_volume(region, truth.transform()) / volume(region)
    found_ratio = warped_volume(region, warp.transform()) / volume(region)
    assert 1.0 + 0.5 * (true_ratio - 1.0) < found_ratio < 1.0 + 1.2 * (true_ratio - 1.0)
    residual = target - warp_array(source, warp, grid)
    assert np.abs(residual).mean() < 0.5 * np.abs(target - source).mean()  # the warp explains most of the change


def test_equal_images_give_the_identity_and_the_scan_itself():
    from ControlCGLib.imaging.native_space import prepare
    from ControlCGLib.imaging.template import load_template

    grid = _grid(16, 4.0)
    a = np.random.default_rng(0).random((16, 16, 16)).astype(np.float32)
    warp = estimate_warp(a, a.copy(), grid)
    assert warp.is_identity and np.array_equal(warp_array(a, warp, grid), a)
    scan = load_template().t1 * 700.0 + 20.0
    prepared = prepare(scan, (40, 48, 40), preprocessed=True)
    same = identity_warp(prepared.grid)
    on_grid, native = prepared.warped_on_grid(same), prepared.warped_native(same)
    assert np.array_equal(on_grid, prepared.model_input)
    assert np.array_equal(sitk.GetArrayFromImage(native), sitk.GetArrayFromImage(sitk.Cast(scan, sitk.sitkFloat32)))
    volumes = regional_volumes(same, prepared.transform)
    assert all(v.change_percent == 0 for v in volumes.values())


def test_the_warped_scan_sits_on_the_oblique_scans_own_grid_with_its_own_intensities(oblique_scan):
    """A known shrinkage around the left hippocampus, carried through the registration of an oblique, anisotropic
    scan: every output on the scan's exact grid, the counterfactual within the scan's intensity range, the change
    inside the brain, and the hippocampi shrinking in the regional volumes."""
    from ControlCGLib.imaging.native_space import prepare

    scan = oblique_scan
    prepared = prepare(scan, (40, 48, 40))
    hippocampus = (26.0, 22.5, -14.5)  # LPS mm of the template: the left hippocampus (the atlas label's centroid)
    warp = radial_warp(prepared.grid, hippocampus, 0.85, inner=8.0, outer=24.0)
    raw = prepared.model_input
    result = prepared.to_native_warped(warp, raw, np.zeros_like(raw))
    for image in (result.detail, result.resampled, result.saliency, result.mask, result.volume_change, result.residual):
        assert same_geometry(image, scan, tol=0)
    native = sitk.GetArrayFromImage(scan)
    shown = sitk.GetArrayFromImage(result.detail)
    assert native.min() <= shown.min() and shown.max() <= native.max()
    brain = sitk.GetArrayFromImage(result.mask) > 0
    saliency = np.abs(sitk.GetArrayFromImage(result.saliency))
    assert saliency[~brain].max() == 0 and saliency[brain].max() > 0
    assert sitk.GetArrayFromImage(result.volume_change).min() < 3 * np.log(0.9)  # shrinks by more than 27 % there
    volumes = regional_volumes(warp, prepared.transform)
    assert volumes["hippocampi"].change_percent < -3.0
    assert abs(volumes["brain"].change_percent) < 1.0  # a local change
    assert abs(volumes["ventricles"].change_percent) < abs(volumes["hippocampi"].change_percent)  # the temporal horn
    on_grid = prepared.warped_on_grid(warp)
    assert 0.0 <= on_grid.min() and on_grid.max() <= 1.0


@pytest.fixture(scope="module")
def oblique_scan():
    """The template rotated onto an oblique 1.3 x 1.1 x 2.5 mm grid, in scanner units."""
    from ControlCGLib.imaging.geometry import resample
    from ControlCGLib.imaging.template import load_template

    t1 = load_template().t1
    rotation = sitk.Euler3DTransform()
    rotation.SetRotation(0.17, 0.0, 0.24)
    direction = np.array(rotation.GetMatrix()).reshape(3, 3)
    spacing = np.array([1.3, 1.1, 2.5])
    size = np.ceil((np.array(t1.GetSize()) * 2.0 + 20) / spacing).astype(int)
    centre = np.array(t1.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in t1.GetSize()]))
    grid = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    grid.SetSpacing(spacing.tolist())
    grid.SetDirection(direction.ravel().tolist())
    grid.SetOrigin((centre - direction @ ((size - 1) / 2 * spacing)).tolist())
    return resample(t1 * 900.0 + 35.0, grid)


def test_the_pipeline_shows_a_deformation_with_volumes_and_the_intensity_change_on_request(tmp_path):
    from conftest import tiny_model_files

    from ControlCGLib.model.checkpoints import load_checkpoint
    from ControlCGLib.pipeline import run_counterfactual
    from ControlCGLib.sampling.settings import SamplingConfig

    scan = tiny_model_files(tmp_path)
    model = load_checkpoint(tmp_path / "model")
    fast = SamplingConfig(steps=4)
    run = run_counterfactual(model, scan, "AD", (2.0,), fast, preprocessed=True, source="CN")
    assert run.change == "deformation" and run.settings["change"] == "deformation"
    native = sitk.GetArrayFromImage(scan)
    shown = sitk.GetArrayFromImage(run.native[2.0].detail)
    assert native.min() <= shown.min() and shown.max() <= native.max()
    assert run.warps[2.0].jacobian().min() > 0
    assert set(run.volumes[2.0]) == {"hippocampi", "ventricles", "temporal cortex", "parietal cortex", "brain"}
    assert run.native[2.0].volume_change is not None
    plain = run_counterfactual(model, scan, "AD", (2.0,), fast, preprocessed=True, source="CN", change="intensity")
    assert plain.native[2.0].volume_change is None and not plain.volumes and not plain.warps
    with pytest.raises(ValueError, match="change must be one of"):
        run_counterfactual(model, scan, "AD", (2.0,), fast, preprocessed=True, source="CN", change="colour")

"""Geometry is sacred: conversions, the model grid, registration of an oblique anisotropic scan, and the way back."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from ControlCGLib.imaging.geometry import (
    CROP_MM,
    array_and_ijk_to_ras,
    image_from_array,
    model_grid,
    resample,
    same_geometry,
)
from ControlCGLib.imaging.native_space import check_scan, prepare
from ControlCGLib.imaging.template import load_template

GRID = (40, 48, 40)


def _rotation(ax_deg: float, az_deg: float) -> np.ndarray:
    a, b = np.deg2rad(ax_deg), np.deg2rad(az_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    return rz @ rx


def test_slicer_matrix_round_trip_oblique_anisotropic():
    rng = np.random.default_rng(0)
    m = np.eye(4)
    m[:3, :3] = _rotation(20, -35) @ np.diag([0.9, 1.3, 3.0])
    m[:3, 3] = [12.5, -40.0, 7.25]
    array = rng.random((7, 6, 5)).astype(np.float32)
    image = image_from_array(array, m)
    assert image.GetSize() == (5, 6, 7) and np.allclose(image.GetSpacing(), [0.9, 1.3, 3.0])
    back, m2 = array_and_ijk_to_ras(image)
    assert np.array_equal(back, array) and np.allclose(m2, m)
    # voxel (i, j, k) = (1, 2, 3) lands where the RAS matrix says, once LPS is flipped
    ras = m @ [1, 2, 3, 1]
    lps = image.TransformIndexToPhysicalPoint((1, 2, 3))
    assert np.allclose([-lps[0], -lps[1], lps[2]], ras[:3])


def test_sheared_or_flat_matrices_are_refused():
    m = np.eye(4)
    m[0, 1] = 0.5
    with pytest.raises(ValueError, match="sheared"):
        image_from_array(np.zeros((3, 3, 3)), m)
    with pytest.raises(ValueError, match="3D"):
        image_from_array(np.zeros((3, 3)), np.eye(4))


def test_model_grid_is_the_paper_crop_around_the_template_centre():
    t = load_template()
    for grid in ((80, 96, 80), GRID):
        ref = model_grid(grid, t.t1)
        assert ref.GetSize() == grid[::-1]
        extent = np.array(ref.GetSize()) * np.array(ref.GetSpacing())
        assert np.allclose(extent, CROP_MM[::-1])
        centre = ref.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in ref.GetSize()])
        t_centre = t.t1.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in t.t1.GetSize()])
        assert np.allclose(centre, t_centre)


@pytest.fixture(scope="module")
def oblique_scan():
    """The template moved by a known rigid motion, sampled on an oblique, anisotropic, shifted grid, rescaled."""
    t = load_template()
    rotation = _rotation(10, 14)
    shift = np.array([6.0, -9.0, 11.0])
    to_template = sitk.AffineTransform(3)  # native point -> template point
    to_template.SetMatrix(rotation.flatten().tolist())
    to_template.SetTranslation(shift.tolist())
    spacing = np.array([1.3, 1.1, 2.5])
    direction = rotation.T @ np.array(t.t1.GetDirection()).reshape(3, 3)
    extent = np.array(t.t1.GetSize()) * np.array(t.t1.GetSpacing()) + 20
    size = np.ceil(extent / spacing).astype(int)
    centre = np.array(t.t1.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in t.t1.GetSize()]))
    native_centre = to_template.GetInverse().TransformPoint(centre.tolist())
    ref = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    ref.SetSpacing(spacing.tolist())
    ref.SetDirection(direction.flatten().tolist())
    ref.SetOrigin((np.array(native_centre) - direction @ ((size - 1) / 2 * spacing)).tolist())
    scan = resample(t.t1 * 900.0 + 35.0, ref, to_template, default=0.0)
    return scan, to_template


def test_registration_recovers_the_motion_to_sub_voxel(oblique_scan):
    scan, to_template = oblique_scan
    t = load_template()
    prepared = prepare(scan, GRID)
    mask = sitk.GetArrayFromImage(t.mask) > 0
    idx = np.argwhere(mask)[:: max(1, int(mask.sum() // 2000))]
    errors = []
    for k, j, i in idx:
        p = t.t1.TransformIndexToPhysicalPoint((int(i), int(j), int(k)))
        q = prepared.transform.TransformPoint(p)  # template -> native, estimated
        errors.append(np.linalg.norm(np.array(to_template.TransformPoint(q)) - p))
    errors = np.array(errors)
    assert errors.mean() < 1.0 and np.percentile(errors, 95) < 2.0  # template voxels are 2 mm
    # the scan on the model grid matches the template's own preprocessing
    direct = prepare(t.t1, GRID, preprocessed=True)
    corr = np.corrcoef(direct.model_input[direct.mask], prepared.model_input[prepared.mask])[0, 1]
    assert corr > 0.97


def test_way_back_has_the_input_geometry_and_keeps_detail(oblique_scan):
    scan, _ = oblique_scan
    prepared = prepare(scan, GRID)
    unchanged = prepared.to_native(prepared.model_input)
    for image in (unchanged.detail, unchanged.resampled, unchanged.saliency, unchanged.mask):
        assert same_geometry(image, scan, tol=0)
    # no change on the model grid -> the detailed counterfactual is the scan itself, exactly
    assert np.array_equal(
        sitk.GetArrayFromImage(unchanged.detail), sitk.GetArrayFromImage(sitk.Cast(scan, sitk.sitkFloat32))
    )
    assert np.abs(sitk.GetArrayFromImage(unchanged.saliency)).max() == 0
    # a uniform change of +0.1 inside the brain comes back as +0.1 x the scan's intensity range
    changed = prepared.to_native(np.where(prepared.mask, prepared.model_input + 0.1, 0.0))
    sal = sitk.GetArrayFromImage(changed.saliency)
    inside = sitk.GetArrayFromImage(erode(changed.mask)) > 0
    assert np.allclose(sal[inside], 0.1 * (prepared.high - prepared.low), rtol=1e-3)


def erode(mask: sitk.Image, mm: float = 8.0) -> sitk.Image:
    """Erode by ``mm``: more than one model-grid voxel (4 mm), so that no interpolation with the outside remains."""
    return sitk.BinaryErode(mask, [int(np.ceil(mm / s)) for s in mask.GetSpacing()])


def test_volume_on_the_model_grid_round_trips():
    t = load_template()
    ref = model_grid(GRID, t.t1)
    on_grid = resample(t.t1, ref) * 500.0
    prepared = prepare(on_grid, GRID, preprocessed=True, template=t)
    back = prepared.to_native(prepared.model_input)
    a = sitk.GetArrayFromImage(back.resampled)
    b = sitk.GetArrayFromImage(on_grid)
    inside = prepared.mask & (b < prepared.high)  # above the 99.5th percentile the normalisation clips
    assert np.allclose(a[inside], b[inside], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize(
    "image, message",
    [
        (sitk.Image([8, 8], sitk.sitkFloat32), "3D"),
        (sitk.Image([8, 8, 8], sitk.sitkVectorFloat32, 3), "components"),
        (sitk.Image([8, 8, 2], sitk.sitkFloat32), "only 2 voxels"),
        (sitk.Image([8, 8, 8], sitk.sitkFloat32) + 3.0, "constant .every voxel is 3."),
        (sitk.Cast(sitk.GetImageFromArray(np.indices((8, 8, 8)).sum(0) % 3), sitk.sitkUInt8), "label map"),
    ],
)
def test_bad_scans_are_refused(image, message):
    with pytest.raises(ValueError, match=message):
        check_scan(image)


def test_registration_with_the_skull_on(oblique_scan):
    """A bright shell around the brain (scalp and skull fat on T1) does not pull the registration off."""
    scan, to_template = oblique_scan
    brain = sitk.Cast(scan > 100, sitk.sitkUInt8)
    head = sitk.BinaryDilate(brain, [8, 8, 4])
    shell = sitk.Cast(sitk.And(head, sitk.BinaryNot(sitk.BinaryDilate(brain, [4, 4, 2]))), sitk.sitkFloat32)
    with_skull = scan + shell * 1100.0
    t = load_template()
    prepared = prepare(with_skull, GRID)
    idx = np.argwhere(sitk.GetArrayFromImage(t.mask) > 0)[::400]
    points = [t.t1.TransformIndexToPhysicalPoint((int(i), int(j), int(k))) for k, j, i in idx]
    errors = [
        np.linalg.norm(np.array(to_template.TransformPoint(prepared.transform.TransformPoint(p))) - p) for p in points
    ]
    assert np.mean(errors) < 2.0  # within one template voxel
    assert prepared.model_input[~prepared.mask].max() == 0  # the template mask strips the skull

"""Is it a whole-brain T1? Other contrasts, non-brain images, too few slices, too thick slices, odd intensity ranges
and a huge field of view, each through the real registration (scan_checks.py, native.prepare)."""

import numpy as np
import pytest
import SimpleITK as sitk

from ControlCGLib.data.phantoms import contrast_scan, non_brain_scan
from ControlCGLib.imaging.native_space import prepare
from ControlCGLib.imaging.scan_checks import ScanRefused, geometry_findings
from ControlCGLib.imaging.template import load_template
from ControlCGLib.resources import sample_scan

GRID = (40, 48, 40)  # the embedded model's grid: 4 mm


@pytest.fixture(scope="module")
def template():
    return load_template()


@pytest.fixture(scope="module")
def sample():
    return sitk.ReadImage(str(sample_scan()))


@pytest.fixture(scope="module")
def sample_prepared(sample, template):
    return prepare(sample, GRID, template=template)


def test_the_sample_passes_and_its_measures_are_recorded(sample_prepared):
    s = sample_prepared.screening
    assert sample_prepared.warnings == [] and s.findings == []
    assert s.separation > 0.35
    assert s.medians["wm"] > s.medians["gm"] + 0.1 > s.medians["csf"] + 0.2


@pytest.mark.parametrize(
    ("contrast", "named"),
    [("T2", "T2-weighted scan or a diffusion b0"), ("b0", "diffusion b0"), ("FLAIR", "FLAIR"), ("PD", "proton")],
)
def test_another_contrast_is_refused_naming_it(contrast, named, template):
    with pytest.raises(ScanRefused, match="tissue contrast looks like") as info:
        prepare(contrast_scan(contrast, template=template), GRID, template=template)
    message = str(info.value)
    assert named in message and "trained on T1-weighted scans" in message and "--accept-unusual-scan" in message


def test_a_t1_drawn_the_same_way_passes(template):
    prepared = prepare(contrast_scan("T1", noise=0.08, template=template), GRID, template=template)
    assert prepared.warnings == []


@pytest.mark.parametrize("kind", ["phantom", "cylinder", "noise"])
def test_a_non_brain_image_is_refused(kind, template):
    with pytest.raises(ScanRefused, match="does not look like a brain MRI"):
        prepare(non_brain_scan(kind, template=template), GRID, template=template)


def test_warn_keeps_the_findings_and_off_skips_them(template):
    flair = contrast_scan("FLAIR", template=template)
    warned = prepare(flair, GRID, template=template, screen="warn")
    assert len(warned.warnings) == 1 and "FLAIR" in warned.warnings[0]
    assert warned.screening.findings == warned.warnings
    off = prepare(flair, GRID, template=template, screen="off")
    assert off.warnings == [] and off.screening is None
    with pytest.raises(ValueError, match="screen must be one of"):
        prepare(flair, GRID, template=template, screen="maybe")


def _resampled(image: sitk.Image, spacing, size) -> sitk.Image:
    ref = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    ref.SetSpacing(spacing)
    ref.SetDirection(image.GetDirection())
    centre = image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()])
    half = (np.array(size) - 1) / 2 * np.array(spacing)
    ref.SetOrigin((np.array(centre) - np.array(image.GetDirection()).reshape(3, 3) @ half).tolist())
    return sitk.Resample(image, ref, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)


def test_a_few_slices_are_refused_before_registration(sample, template, monkeypatch):
    slab = _resampled(sample, (2.0, 2.0, 2.0), (99, 117, 6))  # 12 mm of the brain
    import ControlCGLib.imaging.native_space as native

    monkeypatch.setattr(native, "register_affine", lambda *a, **k: pytest.fail("registered a refused scan"))
    with pytest.raises(ScanRefused, match=r"covers only 12 mm along its k axis \(6 voxels x 2 mm\)"):
        prepare(slab, GRID, template=template)


def test_thick_slices_are_refused(sample, template):
    thick = _resampled(sample, (4.0, 4.0, 10.0), (50, 58, 20))
    findings = geometry_findings(thick, (4.0, 4.0, 4.0))
    assert len(findings) == 1 and "4 x 4 x 10 mm" in findings[0] and "thicker than 8 mm" in findings[0]
    with pytest.raises(ScanRefused, match="invent the detail between slices"):
        prepare(thick, GRID, template=template)
    assert geometry_findings(thick, (8.0, 8.0, 8.0)) == []  # a coarse model grid takes it


@pytest.mark.parametrize(("scale", "shift"), [(1e6, -5e8), (1e-4, -3.0), (-1.0, 0.0)])
def test_intensity_range_does_not_matter(scale, shift, sample, sample_prepared, template):
    """Registration (mutual information) and normalisation (brain min, 99.5th percentile) are blind to an affine
    intensity map; a negative scale inverts the contrast and must be refused like another contrast."""
    mapped = sitk.Cast(sample, sitk.sitkFloat64) * scale + shift
    if scale < 0:
        with pytest.raises(ScanRefused, match="tissue contrast"):
            prepare(mapped, GRID, template=template)
        return
    prepared = prepare(mapped, GRID, template=template)
    assert prepared.low == pytest.approx(sample_prepared.low * scale + shift, rel=1e-4, abs=1e-6 * abs(shift))
    np.testing.assert_allclose(prepared.model_input, sample_prepared.model_input, atol=1e-3)


def test_a_huge_field_of_view_is_handled(sample, sample_prepared, template):
    """The brain inside a 400 mm cube of zeros (a whole-body-sized field of view) registers to the same place."""
    huge = _resampled(sample, (4.0, 4.0, 4.0), (100, 100, 100))
    prepared = prepare(huge, GRID, template=template)
    assert prepared.warnings == []
    r = np.corrcoef(prepared.model_input.ravel(), sample_prepared.model_input.ravel())[0, 1]
    assert r > 0.97


def test_a_slab_of_the_brain_is_refused_after_registration(sample, template):
    """100 mm of the brain passes the header check but leaves a fifth of it outside the field of view."""
    array, _ = sitk.GetArrayFromImage(sample), None
    slab = sitk.GetImageFromArray(array[20:70])
    slab.SetSpacing(sample.GetSpacing())
    slab.SetDirection(sample.GetDirection())
    slab.SetOrigin(sample.TransformIndexToPhysicalPoint((0, 0, 20)))
    assert geometry_findings(slab, (4.0, 4.0, 4.0)) == []
    with pytest.raises(ScanRefused, match=r"holds only \d+ % of the brain"):
        prepare(slab, GRID, template=template)


def test_a_2d_acquisition_is_refused(sample):
    flat = _resampled(sample, (0.5, 0.5, 3.0), (40, 40, 40))
    findings = geometry_findings(flat, (4.0, 4.0, 4.0))
    assert any("6.0 times longer than wide: a 2D acquisition" in f for f in findings)


def test_intensities_beyond_single_precision_are_refused_before_registration(sample, template):
    """Registration would hang on them (ITK's moments initializer, float32): refused by check_scan first."""
    with pytest.raises(ValueError, match="beyond single precision; rescale it"):
        prepare(sitk.Cast(sample, sitk.sitkFloat64) * 1e36, GRID, template=template)


def test_a_cancel_stops_the_registration(sample, template):
    from ControlCGLib.progress import Cancelled

    def cancel(i, metric):
        if i == 2:
            raise Cancelled("cancelled during registration")

    with pytest.raises(Cancelled, match="during registration"):
        prepare(sample, GRID, template=template, on_iteration=cancel)


def test_registration_repeats_bit_for_bit(sample, sample_prepared, template):
    """ITK's multi-threaded metric made the same scan register slightly differently run to run; it runs on one
    thread, so a native-space counterfactual repeats exactly (the CLI test covers the rest of the run)."""
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    again = prepare(sample, GRID, template=template)
    assert again.transform.GetParameters() == sample_prepared.transform.GetParameters()
    np.testing.assert_array_equal(again.model_input, sample_prepared.model_input)
    t2 = contrast_scan("T2", template=template)
    a, b = (prepare(t2, GRID, template=template, screen="off") for _ in range(2))
    np.testing.assert_array_equal(a.model_input, b.model_input)
    assert sitk.ProcessObject.GetGlobalDefaultNumberOfThreads() == threads  # restored, not left at one

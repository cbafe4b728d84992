"""Pictures of results: a montage of the input, its counterfactuals and their signed saliency in three views, and
a counterfactual with its saliency overlaid in three world-axis views as 3D Slicer's slice views show them.

``montage`` takes (z, y, x) arrays, as SimpleITK's ``GetArrayFromImage`` and Slicer's ``arrayFromVolume`` return them,
and slices them along the voxel axes; ``slice_views`` takes SimpleITK images and slices them along the patient axes.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .imaging.geometry import lps_to_ras, ras_to_lps


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
    volume_change: dict[str, np.ndarray] | None = None,
    footer: str = "",
) -> Path:
    """One column per volume (three views each), plus a signed-saliency row per view where given and a volume-change
    row per view (log of the local volume ratio, purple = shrinks, orange = grows) where given; writes a PNG.

    ``spacing`` (z, y, x, in mm) draws anisotropic voxels with their true aspect; ``footer`` is printed below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    maps = []  # (row label, arrays by column, colour map, limit, colour bar label)
    if saliency:
        limit = saliency_limit or max(float(np.abs(a).max()) for a in saliency.values()) or 1.0
        maps.append(("saliency", saliency, "RdBu_r", limit, "counterfactual - input"))
    if volume_change:
        limit = max(float(np.abs(a).max()) for a in volume_change.values()) or 0.1
        maps.append(("volume", volume_change, "PuOr_r", limit, "log volume ratio\n(cf / input; < 0 shrinks)"))
    names = list(columns)
    rows = 3 * (1 + len(maps))
    sz, sy, sx = spacing or (1.0, 1.0, 1.0)
    aspects = [sy / sx, sz / sx, sz / sy]
    fig, axes = plt.subplots(rows, len(names), figsize=(2.2 * len(names), 2.1 * rows), squeeze=False)
    fig.subplots_adjust(hspace=0.08, wspace=0.05)
    for j, name in enumerate(names):
        for i, img in enumerate(_views(np.asarray(columns[name]), centre)):
            axes[i, j].imshow(img, cmap="gray", vmin=intensity_range[0], vmax=intensity_range[1], aspect=aspects[i])
        axes[0, j].set_title(name, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for i, label in enumerate(["axial", "coronal", "sagittal"]):
        axes[i, 0].set_ylabel(label, fontsize=8)
    if maps:
        fig.subplots_adjust(right=0.88)
    for k, (row_label, arrays, cmap, limit, bar_label) in enumerate(maps):
        first = 3 * (k + 1)
        im = None
        for j, name in enumerate(names):
            for i in range(3):
                if name not in arrays:
                    axes[first + i, j].set_frame_on(False)
            if name in arrays:
                for i, img in enumerate(_views(np.asarray(arrays[name]), centre)):
                    im = axes[first + i, j].imshow(img, cmap=cmap, vmin=-limit, vmax=limit, aspect=aspects[i])
        for i, label in enumerate(["axial", "coronal", "sagittal"]):
            axes[first + i, 0].set_ylabel(f"{row_label}\n{label}", fontsize=8)
        bottom, top = axes[first + 2, -1].get_position().y0, axes[first, -1].get_position().y1
        cax = fig.add_axes((0.9, bottom, 0.015, top - bottom))
        fig.colorbar(im, cax=cax, label=bar_label)
    if title:
        fig.suptitle(title, fontsize=10)
    if footer:  # just below the last row of pictures
        fig.text(0.02, axes[-1, 0].get_position().y0 - 0.005, footer, fontsize=8, family="monospace", va="top")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def loss_curve(
    path: str | Path, metrics_csv: str | Path, title: str = "", smooth: int = 100, held_out: str | Path | None = None
) -> Path:
    """Training loss per step (faint) and its running mean over ``smooth`` steps, from a run's metrics.csv; a resumed
    run's repeated steps keep their last value. ``held_out``: a run's held_out.csv, drawn as points (the EMA model on
    held-out subjects at each checkpoint)."""
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
    if held_out is not None:
        with open(held_out, newline="") as f:
            scored = {int(r["step"]): float(r["held_out_loss"]) for r in csv.DictReader(f)}
        if scored:
            ax.plot(
                sorted(scored),
                [scored[step] for step in sorted(scored)],
                "o-",
                color="C3",
                ms=3,
                label="held out (EMA)",
            )
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


# --- Slicer-style slice views -----------------------------------------------------------------------------------------
#
# 3D Slicer's default slice views, read in Slicer's source (tag v5.12.3):
#   Libs/MRML/Logic/vtkMRMLLayoutLogic.cxx, the conventional layout: the Red view's default orientation is Axial,
#     Green's is Coronal and Yellow's is Sagittal (<property name="orientation" action="default">Axial</property> etc.).
#   Libs/MRML/Core/vtkMRMLSliceNode.cxx, Get{Axial,Coronal,Sagittal}SliceToRASMatrix with patientRightIsScreenLeft=true
#     (the default, "radiology" convention; AddDefaultSliceOrientationPresets is called with it from
#     vtkMRMLApplicationLogic). The columns of SliceToRAS are the screen's x (to the right), y (up) and the slice
#     normal, in RAS, and UpdateMatrices maps the view's XY pixels (VTK display coordinates: origin bottom left, y up)
#     through them:
#       Axial:    x = (-1, 0, 0) "// L",  y = (0, 1, 0) "// A",  normal = (0, 0, 1) "// S"
#       Sagittal: x = (0, -1, 0) "// P",  y = (0, 0, 1) "// S",  normal = (-1, 0, 0) "// L"
#       Coronal:  x = (-1, 0, 0) "// L",  y = (0, 0, 1) "// S",  normal = (0, 1, 0) "// A"
#   So: axial has patient right on the screen's left and anterior up; coronal has patient right on the left and
#   superior up; sagittal has ANTERIOR ON THE SCREEN'S LEFT (posterior to the right) and superior up.
# SimpleITK works in LPS: (x, y, z)_LPS = (-R, -A, S), so the same directions in LPS have x and y negated.
_SLICER_VIEWS: tuple[tuple[str, str, np.ndarray], ...] = (
    ("Axial (Red)", "#F34A33", np.array([[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).T),
    ("Coronal (Green)", "#6EB04B", np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]).T),
    ("Sagittal (Yellow)", "#EDD54C", np.array([[0.0, -1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 0.0, 0.0]]).T),
)
_RAS_LETTERS = (("L", "R"), ("P", "A"), ("I", "S"))  # (negative, positive) end of each RAS axis


def _screen_axis(direction_ras: np.ndarray) -> tuple[int, float]:
    """The LPS axis a SliceToRAS column runs along, and its sign in LPS."""
    lps = ras_to_lps(direction_ras)
    axis = int(np.argmax(np.abs(lps)))
    return axis, float(np.sign(lps[axis]))


def _ras_letter(direction_ras: np.ndarray) -> str:
    axis = int(np.argmax(np.abs(direction_ras)))
    return _RAS_LETTERS[axis][int(direction_ras[axis] > 0)]


@dataclass(frozen=True)
class SliceView:
    """One slice as Slicer draws it: ``array[0, 0]`` is the screen's top left; ``spacing`` is (horizontal, vertical)
    in mm; ``point_pixel`` the (row, column) where the slice point lies; ``edges`` the patient directions (RAS
    letters) at the screen's (left, right, top, bottom); ``offset`` the slice's position along its normal as Slicer's
    slice slider shows it (RAS mm, with the normal's letter)."""

    title: str
    colour: str
    array: np.ndarray
    spacing: tuple[float, float]
    point_pixel: tuple[float, float]
    edges: tuple[str, str, str, str]
    offset: tuple[str, float]


def world_grid(image: sitk.Image, spacing: float | None = None) -> tuple[np.ndarray, float, np.ndarray]:
    """An axis-aligned (identity-direction) LPS grid covering ``image``'s physical extent (its voxel centres' corners):
    (origin, isotropic spacing, size per LPS axis). The spacing defaults to the image's finest."""
    s = float(spacing or min(image.GetSpacing()))
    corners = [
        image.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])
        for corner in itertools.product(*[(0, n - 1) for n in image.GetSize()])
    ]
    lo, hi = np.min(corners, axis=0), np.max(corners, axis=0)
    size = np.ceil((hi - lo) / s - 1e-6).astype(int) + 1
    return lo, s, size


def slicer_slices(
    image: sitk.Image,
    point: tuple[float, float, float] | np.ndarray,
    grid: tuple[np.ndarray, float, np.ndarray] | None = None,
    interpolator: int = sitk.sitkLinear,
    default: float = 0.0,
) -> list[SliceView]:
    """Axial, coronal and sagittal slices through the physical LPS ``point``, along the world axes (not the voxel
    axes), oriented on the screen as Slicer's Red, Green and Yellow views show them by default. Each is resampled
    from ``image`` onto ``grid`` (``world_grid(image)`` by default; pass another image's to overlay the two)."""
    lo, s, size = grid if grid is not None else world_grid(image)
    p = np.asarray(point, dtype=float)
    views = []
    for title, colour, slice_to_ras in _SLICER_VIEWS:
        (h, h_sign), (v, v_sign), (n, _) = (_screen_axis(slice_to_ras[:, k]) for k in range(3))
        origin, shape = lo.copy(), size.copy()
        origin[n], shape[n] = p[n], 1
        slab = sitk.Resample(
            image,
            [int(k) for k in shape],
            sitk.Transform(),
            interpolator,
            [float(o) for o in origin],
            [s, s, s],
            [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            default,
            sitk.sitkFloat32,
        )
        lps = sitk.GetArrayFromImage(slab).transpose(2, 1, 0)  # (x, y, z) in LPS
        plane = np.take(lps, 0, axis=n)  # the two remaining axes, in increasing LPS order
        if h < v:  # rows = the vertical axis, columns = the horizontal one
            plane = plane.T
        row = (p[v] - lo[v]) / s
        col = (p[h] - lo[h]) / s
        if v_sign > 0:  # up is increasing coordinate: the top row is the largest
            plane, row = plane[::-1], size[v] - 1 - row
        if h_sign < 0:  # right is decreasing coordinate: the left column is the largest
            plane, col = plane[:, ::-1], size[h] - 1 - col
        right, up, normal = (slice_to_ras[:, k] for k in range(3))
        ras_point = lps_to_ras(p)
        views.append(
            SliceView(
                title=title,
                colour=colour,
                array=np.ascontiguousarray(plane),
                spacing=(s, s),
                point_pixel=(float(row), float(col)),
                edges=(_ras_letter(-right), _ras_letter(right), _ras_letter(up), _ras_letter(-up)),
                offset=(_ras_letter(np.abs(normal)), float(ras_point[int(np.argmax(np.abs(normal)))])),
            )
        )
    return views


def peak_point(saliency: sitk.Image) -> tuple[float, float, float]:
    """The physical LPS point of the voxel with the largest |saliency| (NaN ignored)."""
    a = np.abs(np.nan_to_num(sitk.GetArrayFromImage(saliency).astype(float), nan=0.0))
    z, y, x = np.unravel_index(int(np.argmax(a)), a.shape)
    return tuple(saliency.TransformIndexToPhysicalPoint((int(x), int(y), int(z))))


def head_window(image: sitk.Image, percentiles: tuple[float, float] = (1.0, 99.5)) -> tuple[float, float]:
    """Grey window: the given percentiles of the intensities inside the head (above Otsu's threshold, or every
    finite voxel when that leaves too few)."""
    a = sitk.GetArrayFromImage(image).astype(float)
    a = a[np.isfinite(a)]
    if not a.size:
        return 0.0, 1.0
    otsu = sitk.OtsuThresholdImageFilter()
    otsu.Execute(sitk.Cast(image, sitk.sitkFloat32))
    head = a[a > otsu.GetThreshold()]
    values = head if head.size >= max(10, a.size // 100) else a
    low, high = (float(v) for v in np.percentile(values, percentiles))
    return (low, high) if high > low else (low, low + 1.0)


def saliency_colormap(threshold: float = 0.05, opacity: float = 0.6, n: int = 256):
    """The overlay's matplotlib colormap, from ``overlay.diverging_rgba(n, threshold)``: alpha ``opacity`` where the
    table's alpha is 1, fully transparent elsewhere and for NaN. Like Slicer's lookup table, a value is binned to one
    of the ``n`` entries over the window (vmin = -window, vmax = +window)."""
    from matplotlib.colors import ListedColormap

    from .overlay import diverging_rgba

    if not 0.0 < opacity <= 1.0:
        raise ValueError(f"opacity must be in (0, 1], got {opacity}")
    table = diverging_rgba(n, threshold)
    table[:, 3] = np.where(table[:, 3] == 1.0, opacity, 0.0)
    return ListedColormap(table, name="controlcg_saliency").with_extremes(bad=(0.0, 0.0, 0.0, 0.0))


def draw_slice_views(
    fig,
    cells,
    grey: list[SliceView],
    overlay: list[SliceView],
    low: float,
    high: float,
    cmap,
    norm,
    *,
    overlay_interpolation: str = "bilinear",
    offsets: bool = True,
) -> list:
    """Draws three ``slicer_slices`` views into the figure's gridspec ``cells``, as Slicer's slice views look: the grey
    ``grey`` windowed to [``low``, ``high``], ``overlay`` over it through ``cmap`` and ``norm`` (NaN transparent),
    each titled in its view's colour, the patient directions on its edges and, with ``offsets``, its slice offset in
    the corner. One drawing for every figure of slice views, so that they all read alike. Returns the axes."""
    from matplotlib import patheffects

    outline = [patheffects.withStroke(linewidth=2, foreground="black")]
    axes = []
    for cell, g, c in zip(cells, grey, overlay):
        ax = fig.add_subplot(cell)
        ax.set_facecolor("black")
        rows, cols = g.array.shape
        extent = (0.0, cols * g.spacing[0], rows * g.spacing[1], 0.0)  # mm, top row at the top
        ax.imshow(g.array, cmap="gray", vmin=low, vmax=high, extent=extent, interpolation="bilinear")
        ax.imshow(
            np.ma.masked_invalid(c.array), cmap=cmap, norm=norm, extent=extent, interpolation=overlay_interpolation
        )
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(
            g.title,
            fontsize=10,
            color="black",
            bbox={"facecolor": g.colour, "edgecolor": "none", "boxstyle": "round,pad=0.25"},
        )
        left, right, top, bottom = g.edges
        style = {"color": "white", "fontsize": 10, "fontweight": "bold", "path_effects": outline}
        ax.text(0.02, 0.5, left, transform=ax.transAxes, ha="left", va="center", **style)
        ax.text(0.98, 0.5, right, transform=ax.transAxes, ha="right", va="center", **style)
        ax.text(0.5, 0.98, top, transform=ax.transAxes, ha="center", va="top", **style)
        ax.text(0.5, 0.02, bottom, transform=ax.transAxes, ha="center", va="bottom", **style)
        if offsets:
            letter, offset = g.offset
            ax.text(
                0.02,
                0.02,
                f"{letter}: {offset:.1f} mm",
                transform=ax.transAxes,
                ha="left",
                va="bottom",
                color="0.9",
                fontsize=7,
                path_effects=outline,
            )
        axes.append(ax)
    return axes


def slice_views(
    path: str | Path,
    background: sitk.Image,
    saliency: sitk.Image,
    *,
    threshold: float = 0.05,
    opacity: float = 0.6,
    point: tuple[float, float, float] | None = None,
    title: str | None = None,
    window: float | None = None,
) -> Path:
    """A counterfactual (or any ``background``) with its signed ``saliency`` overlaid, in axial, coronal and sagittal
    views side by side as 3D Slicer's Red, Green and Yellow slice views show them by default (world axes, patient
    right on the screen's left, anterior on the sagittal view's left); writes a PNG.

    The background is grey, windowed to the 1st-99.5th percentile inside the head. The overlay uses the module's
    colour table (``overlay.diverging_rgba``, blue = darker, red = brighter) over the symmetric window
    ``overlay.symmetric_window``; values within ``threshold`` of the window's half-width are transparent, the rest are
    drawn with ``opacity``. ``point`` (physical LPS, mm) selects the slices: by default the largest |saliency|.
    ``window`` (the half-width) defaults to this map's own; pass the one shared by a sweep's maps, as the module does,
    so that the same colour means the same change across w."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.patches import Rectangle

    from .overlay import diverging_rgba, symmetric_window

    table = diverging_rgba(256, threshold)
    if window is None:
        window = symmetric_window([sitk.GetArrayFromImage(saliency)])
    elif not window > 0:
        raise ValueError(f"window must be > 0, got {window}")
    window = float(window)
    point = peak_point(saliency) if point is None else tuple(float(c) for c in point)
    if len(point) != 3:
        raise ValueError(f"point must be a physical (x, y, z) LPS point, got {point}")
    grid = world_grid(background)
    low, high = head_window(background)
    grey = slicer_slices(background, point, grid, default=low)
    change = slicer_slices(saliency, point, grid, default=0.0)

    overlay_cmap = saliency_colormap(threshold, opacity)
    norm = Normalize(-window, window)

    widths = [v.array.shape[1] * v.spacing[0] for v in grey]
    fig = plt.figure(figsize=(11.5, 4.6), dpi=130)
    gs = fig.add_gridspec(1, 4, width_ratios=[*widths, 0.045 * sum(widths)], wspace=0.06)
    draw_slice_views(fig, [gs[0, i] for i in range(3)], grey, change, low, high, overlay_cmap, norm)

    cax = fig.add_subplot(gs[0, 3])
    legend = ListedColormap(np.where(table[:, 3:] == 1.0, table, [0.0, 0.0, 0.0, 0.0]), name="controlcg_legend")
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=legend), cax=cax)
    bar.set_label("change (counterfactual \u2212 input)", fontsize=9)
    band = threshold * window
    bar.set_ticks([-window, -band, 0.0, band, window] if threshold >= 0.1 else [-window, 0.0, window])
    cax.add_patch(Rectangle((0, -band), 1, 2 * band, facecolor="0.93", hatch="////", edgecolor="0.6", lw=0, zorder=0))
    if threshold >= 0.1:
        cax.text(0.5, 0.0, "not\ndrawn", ha="center", va="center", fontsize=6, color="0.3", transform=cax.transData)
    bar.ax.tick_params(labelsize=7)
    cax.text(0.5, 1.01, "brighter", transform=cax.transAxes, ha="center", va="bottom", fontsize=8, color="#B2182B")
    cax.text(0.5, -0.01, "darker", transform=cax.transAxes, ha="center", va="top", fontsize=8, color="#2166AC")
    if title:
        fig.suptitle(title, fontsize=11)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path

"""Draws a counterfactual with an overlay, in three orthogonal views as the Slicer module shows them (Red = axial,
Green = coronal, Yellow = sagittal), from ``controlcg counterfactual`` run directories: the signed saliency (one run),
or the volume change -- the log of the local volume ratio, purple shrinks, orange grows, in the module's colour table
and fixed window (ControlCGLib.slicer_bridge) -- one row per run.

    python docs/make_slicer_overlay.py RUN_DIR --w 4 --out docs/images/slicer_overlay.png
    python docs/make_slicer_overlay.py SAMPLE_RUN COLIN27_RUN --overlay volume-change --labels "the sample" \
        "Colin27's head" --w 4 --point 28 22 -14 --out docs/images/slicer_volume_change.png

(SAMPLE_RUN: `controlcg counterfactual Resources/Sample/sample_T1.nii.gz --target AD --w 0 2 4 6 8 10`; COLIN27_RUN:
the same on Resources/Anatomies/colin27/head_t1_2mm.nii.gz with --w 4; the point, LPS mm on both MNI-aligned grids,
lies in the right hippocampus.)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ControlCGLib import slicer_bridge as bridge
from ControlCGLib.figures import draw_slice_views, head_window, peak_point, slice_views, slicer_slices, world_grid
from ControlCGLib.overlay import symmetric_window


def _scale_key(outputs: dict, w: float) -> str:
    """The key of ``outputs`` for scale ``w`` ("4" for 4 or 4.0)."""
    for key in outputs:
        if float(key) == float(w):
            return key
    raise SystemExit(f"no outputs for w={w:g}; the run has w = {', '.join(outputs)}")


def _verdict(verdicts: dict, w: float) -> dict[str, float] | None:
    """The verdict at ``w`` of result.json's ``verdicts`` (format 2: keyed "4", "2.5"; the input's is apart)."""
    for key, probabilities in verdicts.items():
        if float(key.removeprefix("w=")) == float(w):
            return probabilities
    return None


def volume_change_rows(
    path: Path,
    rows: list[tuple[str, sitk.Image, sitk.Image]],
    *,
    threshold: float,
    opacity: float,
    point: tuple[float, float, float] | None = None,
    title: str | None = None,
) -> Path:
    """One row per (label, counterfactual, volume change): the three slice views through ``point`` (default: each
    row's largest |volume change|), the volume change drawn with the module's colour table
    (slicer_bridge.volume_change_rgba) over its fixed window, values within ``threshold`` of it transparent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize

    window = bridge.VOLUME_CHANGE_WINDOW
    table = bridge.volume_change_rgba(256, threshold)
    drawn = table.copy()
    drawn[:, 3] = np.where(table[:, 3] == 1.0, opacity, 0.0)
    cmap = ListedColormap(drawn).with_extremes(bad=(0.0, 0.0, 0.0, 0.0))
    norm = Normalize(-window, window)

    views = []
    for label, background, change in rows:
        where = point if point is not None else peak_point(change)
        grid = world_grid(background)
        low, high = head_window(background)
        views.append(
            (label, slicer_slices(background, where, grid, default=low), slicer_slices(change, where, grid), low, high)
        )
    widths = [v.array.shape[1] * v.spacing[0] for v in views[0][1]]
    fig = plt.figure(figsize=(11.5, 4.1 * len(rows)), dpi=130)
    gs = fig.add_gridspec(len(rows), 4, width_ratios=[*widths, 0.045 * sum(widths)], wspace=0.06, hspace=0.12)
    for r, (label, grey, change, low, high) in enumerate(views):
        cells = [gs[r, i] for i in range(3)]
        axes = draw_slice_views(
            fig, cells, grey, change, low, high, cmap, norm, overlay_interpolation="nearest", offsets=False
        )
        axes[0].set_ylabel(label, fontsize=10)
        cax = fig.add_subplot(gs[r, 3])
        legend = ListedColormap(np.where(table[:, 3:] == 1.0, table, [0.93, 0.93, 0.93, 1.0]))
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=legend), cax=cax)
        ratios = (0.5, 1 / 1.5, 1.0, 1.5, 2.0)
        bar.set_ticks([float(np.log(q)) for q in ratios])
        bar.set_ticklabels(["\u00d70.5", "\u00d70.67", "\u00d71", "\u00d71.5", "\u00d72"])
        bar.ax.tick_params(labelsize=7)
        bar.set_label("local volume, counterfactual / scan", fontsize=8)
        cax.text(0.5, 1.01, "grows", transform=cax.transAxes, ha="center", va="bottom", fontsize=8, color="#B35806")
        cax.text(0.5, -0.01, "shrinks", transform=cax.transAxes, ha="center", va="top", fontsize=8, color="#542788")
    if title:
        fig.suptitle(title, fontsize=11)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


def _volume_change_title(label: str, result: dict, w: float) -> str:
    key = _scale_key(result["outputs"], w)
    volumes = result.get("volumes", {}).get(key, {})
    parts = [f"{region} {v['change_percent']:+.0f} %" for region, v in volumes.items() if region != "brain"]
    source = result.get("settings", {}).get("source")
    verdict = _verdict(result.get("verdicts", {}), w) or {}
    target = result.get("target", "?")
    before, after = result.get("input_verdict", {}).get(target), verdict.get(target)
    said = f"; p({target}) {before:.2f} \u2192 {after:.2f}" if before is not None and after is not None else ""
    return f"{label}: {target} from {source}" + said + ("; " + ", ".join(parts) if parts else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", type=Path, nargs="+", help="run directories holding result.json")
    parser.add_argument("--overlay", choices=("saliency", "volume-change"), default="saliency")
    parser.add_argument("--labels", nargs="+", help="a label per run directory (volume-change rows)")
    parser.add_argument("--w", type=float, default=4.0, help="guidance scale whose counterfactual to draw")
    parser.add_argument("--out", type=Path, default=Path("docs/images/slicer_overlay.png"))
    # 0.2, not the colour table's 0.05: in the sample run the median |change| inside the brain is ~9 % of the window,
    # so at 0.05 a faint wash covers nearly the whole brain and hides the anatomy.
    parser.add_argument(
        "--threshold", type=float, default=0.2, help="fraction of the window around 0 left transparent (default 0.2)"
    )
    parser.add_argument("--opacity", type=float, default=0.6, help="overlay opacity (default 0.6)")
    parser.add_argument(
        "--point", type=float, nargs=3, metavar=("X", "Y", "Z"), help="slice point, physical LPS mm (default: peak)"
    )
    args = parser.parse_args(argv)

    if args.overlay == "volume-change":
        labels = args.labels or [d.name for d in args.run_dirs]
        if len(labels) != len(args.run_dirs):
            raise SystemExit("give one label per run directory")
        rows, titles = [], []
        for label, run_dir in zip(labels, args.run_dirs):
            result = json.loads((run_dir / "result.json").read_text())
            files = result["outputs"][_scale_key(result["outputs"], args.w)]
            if "volume_change" not in files:
                raise SystemExit(f"{run_dir} holds no volume change (an intensity-change run)")
            rows.append(
                (
                    label,
                    sitk.ReadImage(str(run_dir / files["counterfactual"])),
                    sitk.ReadImage(str(run_dir / files["volume_change"])),
                )
            )
            titles.append(_volume_change_title(label, result, args.w))
        title = f"Volume change at w = {args.w:g} over the counterfactual\n" + "\n".join(titles)
        out = volume_change_rows(
            args.out, rows, threshold=args.threshold, opacity=args.opacity, point=args.point, title=title
        )
        print(out)
        return
    if len(args.run_dirs) != 1:
        raise SystemExit("the saliency picture takes one run directory")
    run_dir = args.run_dirs[0]

    result = json.loads((run_dir / "result.json").read_text())
    files = result["outputs"][_scale_key(result["outputs"], args.w)]
    counterfactual = sitk.ReadImage(str(run_dir / files["counterfactual"]))
    saliency = sitk.ReadImage(str(run_dir / files["saliency"]))

    # the module windows every w of a sweep alike (one colour = one change across w): do the same
    window = symmetric_window(
        sitk.GetArrayFromImage(sitk.ReadImage(str(run_dir / f["saliency"]))) for f in result["outputs"].values()
    )

    target = result.get("target", "?")
    source = result.get("settings", {}).get("source")
    pairing = f"saliency = the paired change {target} - {source}" if source else "unpaired"
    title = f"Counterfactual (scan + change) towards {target}, w = {args.w:g}, {pairing}"
    verdict = _verdict(result.get("verdicts", {}), args.w)
    if verdict:
        before = result.get("input_verdict")
        shown = ", ".join(f"p({name}) = {p:.3f}" for name, p in verdict.items())
        title += f"; classifier on the counterfactual: {shown}"
        if before and target in before:
            title += f" (input: p({target}) = {before[target]:.3f})"
    out = slice_views(
        args.out,
        counterfactual,
        saliency,
        threshold=args.threshold,
        opacity=args.opacity,
        point=args.point,
        title=title,
        window=window,
    )
    print(out)


if __name__ == "__main__":
    main()

"""Draws a counterfactual with its signed saliency overlaid, in three orthogonal views as the Slicer module shows
them (Red = axial, Green = coronal, Yellow = sagittal), from a ``controlcg counterfactual`` run directory.

    python docs/make_slicer_overlay.py RUN_DIR --w 4 --out docs/images/slicer_overlay.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import SimpleITK as sitk

from ControlCGLib.figures import slice_views
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a run directory holding result.json")
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

    result = json.loads((args.run_dir / "result.json").read_text())
    files = result["outputs"][_scale_key(result["outputs"], args.w)]
    counterfactual = sitk.ReadImage(str(args.run_dir / files["counterfactual"]))
    saliency = sitk.ReadImage(str(args.run_dir / files["saliency"]))

    # the module windows every w of a sweep alike (one colour = one change across w): do the same
    window = symmetric_window(
        sitk.GetArrayFromImage(sitk.ReadImage(str(args.run_dir / f["saliency"]))) for f in result["outputs"].values()
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

"""Calibration of the appearance checks (ControlCGLib/imaging/scan_checks.py): what they measure on scans they must
accept and on scans they must refuse, with the thresholds drawn in.

    python benchmarks/scan_checks.py --out benchmarks/results/scan_checks.json --figure docs/images/scan_checks.png

Accepted: the bundled sample, simulated subjects moved off MNI space (bias field, noise, atrophy), template-drawn T1s
with more noise. Refused: T2, FLAIR, diffusion b0 and proton density drawn from the template's tissue maps, and
non-brain images. Every scan goes through the real registration. All of these are synthetic (no real scans can be
shipped or downloaded here); real-cohort calibration is for whoever has ADNI access.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import dataclasses  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from ControlCGLib.data.phantoms import CONTRASTS, NON_BRAIN, contrast_scan, non_brain_scan, off_mni  # noqa: E402
from ControlCGLib.data.simulator import COHORT_V1, CohortSimulator  # noqa: E402
from ControlCGLib.imaging.registration import register_affine  # noqa: E402
from ControlCGLib.imaging.scan_checks import THRESHOLDS, appearance  # noqa: E402
from ControlCGLib.imaging.template import load_template  # noqa: E402
from ControlCGLib.resources import sample_scan  # noqa: E402


def _subject_off_mni(sim: CohortSimulator, index: int, seed: int, label: str) -> sitk.Image:
    """One simulated subject's T1 (template grid), placed off MNI space like the sample."""
    _, array, _, _ = sim.subject(index, seed=seed, label=label)
    img = sitk.GetImageFromArray(array)
    img.CopyInformation(sim.anatomy.reference)
    return off_mni(img)


def cases(template, subjects: int):
    yield "T1 brain", "sample", lambda: sitk.ReadImage(str(sample_scan()))
    sim = CohortSimulator(COHORT_V1, template=template)
    for i in range(subjects):
        for label in ("CN", "AD"):
            yield "T1 brain", f"simulated {label} {i}", lambda i=i, label=label: _subject_off_mni(sim, i, 11, label)
    young = CohortSimulator(
        dataclasses.replace(COHORT_V1, ventricle_push_mm=-6.0, hippocampus_pull_mm=0.0, cortex_loss=0.0), template
    )
    for i in range(subjects):  # "AD" with a negative push: ventricles shrunk to a few mL, as in young adults
        yield "T1 brain", f"small ventricles {i}", lambda i=i: _subject_off_mni(young, i, 12, "AD")
    for noise in (0.03, 0.08):
        yield "T1 brain", f"T1 from maps, noise {noise}", lambda n=noise: contrast_scan("T1", 1, n, template)
    for contrast in CONTRASTS:
        if contrast != "T1":
            for seed in (0, 1):
                yield (
                    "other contrast",
                    f"{contrast} {seed}",
                    lambda c=contrast, s=seed: contrast_scan(c, s, 0.03, template),
                )
    for kind in NON_BRAIN:
        yield "not a brain", kind, lambda k=kind: non_brain_scan(k, 0, template)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="JSON with every measurement")
    parser.add_argument("--figure", default=None, help="scatter plot of the two measures with the thresholds")
    parser.add_argument("--subjects", type=int, default=2, help="simulated subjects per class")
    args = parser.parse_args()
    template = load_template()
    rows = []
    todo = list(cases(template, args.subjects))
    for group, name, make in tqdm(todo, desc="registering", unit="scan"):
        began = time.perf_counter()
        image = make()
        reg = register_affine(image, template.t1, template.mask)
        s = appearance(image, reg.transform, template)
        m = s.medians
        rows.append(
            {
                "group": group,
                "scan": name,
                **s.as_dict(),
                "t1_margin": round(min(m["wm"] - m["gm"] - THRESHOLDS["min_order_gap"], m["gm"] - m["csf"]), 4),
                "refused": bool(s.findings),
                "seconds": round(time.perf_counter() - began, 2),
            }
        )
    print(f"{'group':15s} {'scan':28s} {'eta2':>6s} {'WM':>6s} {'GM':>6s} {'CSF':>6s}  verdict")
    for r in rows:
        m = r["tissue_levels"]
        verdict = "refused" if r["refused"] else "accepted"
        print(
            f"{r['group']:15s} {r['scan']:28s} {r['tissue_separation']:6.3f} {m['wm']:6.3f} {m['gm']:6.3f} "
            f"{m['csf']:6.3f}  {verdict}"
        )
    wrong = [r["scan"] for r in rows if r["refused"] != (r["group"] != "T1 brain")]
    print(f"misjudged: {wrong or 'none'} of {len(rows)} scans")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"thresholds": THRESHOLDS, "scans": rows}, indent=2) + "\n")
    if args.figure:
        _figure(Path(args.figure), rows)


def _figure(path: Path, rows: list[dict]) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 5), constrained_layout=True)
    colours = {"T1 brain": "tab:green", "other contrast": "tab:orange", "not a brain": "tab:red"}
    for group, colour in colours.items():
        pts = [r for r in rows if r["group"] == group]
        ax.scatter([r["tissue_separation"] for r in pts], [r["t1_margin"] for r in pts], c=colour, label=group, s=40)
        seen = set()
        for r in pts:
            label = r["scan"].rsplit(" ", 1)[0] if group == "other contrast" else r["scan"]
            if (group != "T1 brain" or label == "sample") and label not in seen:
                seen.add(label)
                xy = (r["tissue_separation"], r["t1_margin"])
                ax.annotate(label, xy, fontsize=8, xytext=(4, 2), textcoords="offset points")
    ax.axvline(THRESHOLDS["min_separation"], color="grey", ls="--", lw=1)
    ax.axhline(0.0, color="grey", ls=":", lw=1)
    ax.set_xlabel("tissue separation (correlation ratio of intensity given WM / GM / CSF)")
    ax.set_ylabel(f"T1 margin: min(WM - GM - {THRESHOLDS['min_order_gap']:g}, GM - CSF)")
    ax.set_title("scan checks: accepted only right of the dashed and above the dotted line")
    ax.legend(loc="lower right")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""How subject-specific the simulated disease is: the anchors' R² as the simulator's per-subject variety grows.

    python benchmarks/world_choice.py --subjects 16 --out benchmarks/results/world_choice.json
    python benchmarks/world_choice.py --subjects 24 --levels 0 1.5 3 \\
        --out benchmarks/results/world_choice_by_anatomy.json

For each variety level (0 = cohort v2's one pattern per anatomy; level L > 0 = cohort v3 with a regional jitter and an
asymmetry of 0.3 L each: v3's defaults are the chosen level), simulate AD subjects and CN subjects of the anatomies
the embedded models were trained on (never the held-out ones), and score on the embedded model's grid (40 x 48 x 40, 4
mm: where the evaluation scores them), inside the brain:

- ``atlas``: the mean true change of the other subjects of that direction, added to the scan (leave-one-out);
- ``atlas, same anatomy``: the same from the other subjects of the scan's own base anatomy only -- what the
  evaluation's atlas is when its cohort holds few anatomies (its report cohort: two), and free of the anatomy
  mismatch that lowers the mixed atlas whatever the disease does;
- ``other-subject``: one other subject's true change.

R² = 1 - sum ||anchor - truth||^2 / sum ||scan - truth||^2, pooled over subjects. The world is right when, for AD -> CN,
the atlas explains well under half of the true change (R² <= 0.5) and another subject's change little (R² <= 0.3).
The hippocampal volume change of AD (truth vs scan) is printed beside, against the about 22-24 % smaller hippocampi of
AD than of controls (Shi et al., Hippocampus 2009, meta-analysis).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm.auto import tqdm

from ControlCGLib.data.simulator import COHORT_V2, CohortSimulator, SimulationConfig
from ControlCGLib.imaging.geometry import anti_alias, model_grid, resample

TRAINED = ("icbm2009a", "colin27", "mni152nlin6", "oasis")  # Resources/Models/controlcg-cpu: its cohort's anatomies
STEP = 0.3  # regional jitter and asymmetry per level


def config_at(level: float, anatomies=TRAINED) -> SimulationConfig:
    if level == 0:
        return dataclasses.replace(COHORT_V2, anatomies=tuple(anatomies))
    return dataclasses.replace(
        SimulationConfig(), anatomies=tuple(anatomies), region_jitter=STEP * level, asymmetry=min(0.9, STEP * level)
    )


def pooled_r2(shown: list[np.ndarray], truths: list[np.ndarray]) -> float:
    return 1.0 - sum(float(np.sum((s - t) ** 2)) for s, t in zip(shown, truths)) / sum(
        float(np.sum(t**2)) for t in truths
    )


def _on_grid(array: np.ndarray, reference: sitk.Image, grid: sitk.Image) -> np.ndarray:
    img = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    img.CopyInformation(reference)
    return sitk.GetArrayFromImage(resample(anti_alias(img, grid.GetSpacing()), grid))


def measure(level: float, n: int, seed: int, anatomies=TRAINED, grid=(40, 48, 40)) -> dict:
    sim = CohortSimulator(config_at(level, anatomies))
    ref = sim.anatomy.reference
    target = model_grid(grid, ref)
    out = {}
    for label in ("AD", "CN"):
        changes, masks, hippo, bases = [], [], [], []
        for i in tqdm(range(n), desc=f"level {level:g} {label}", leave=False):
            record, image, cf, change = sim.subject(i, seed, label=label)
            bases.append(record.anatomy)
            masks.append(_on_grid(((image > 0) | (cf > 0)).astype(np.float32), ref, target) > 0.5)
            changes.append(_on_grid(change, ref, target))
            hippo.append(record.counterfactual_hippocampus_ml / max(record.hippocampus_ml, 1e-6))
        brain = np.all(masks, axis=0)
        t = [c[brain] for c in changes]
        total = np.sum(t, axis=0)
        atlas = [(total - own) / (n - 1) for own in t]
        same = [[j for j in range(n) if bases[j] == bases[k] and j != k] for k in range(n)]
        kept = [k for k in range(n) if same[k]]  # a subject alone of its anatomy has no same-anatomy atlas
        same_atlas = [np.mean([t[j] for j in same[k]], axis=0) for k in kept]
        other = [t[(k + 1) % n] for k in range(n)]
        out[f"{label}->{'CN' if label == 'AD' else 'AD'}"] = {
            "atlas_r2": round(pooled_r2(atlas, t), 4),
            "atlas_same_anatomy_r2": round(pooled_r2(same_atlas, [t[k] for k in kept]), 4),
            "other_subject_r2": round(pooled_r2(other, t), 4),
            "hippocampus_cf_over_scan": round(float(np.mean(hippo)), 4),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--subjects", type=int, default=16, help="subjects per direction and level")
    p.add_argument("--levels", type=float, nargs="+", default=[0.0, 1.0, 1.5, 2.0])
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--anatomies", nargs="+", default=list(TRAINED), help="base anatomies (default: the trained four)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    began = time.perf_counter()
    curve = {f"{level:g}": measure(level, args.subjects, args.seed, args.anatomies) for level in args.levels}
    for level, result in curve.items():
        for direction, r in result.items():
            print(f"level {level:>4s} {direction}: atlas R² {r['atlas_r2']:+.3f} (same anatomy "
                  f"{r['atlas_same_anatomy_r2']:+.3f}), other subject R² {r['other_subject_r2']:+.3f}, "
                  f"hippocampi cf/scan {r['hippocampus_cf_over_scan']:.3f}")  # fmt: skip
    report = {"subjects": args.subjects, "seed": args.seed, "anatomies": args.anatomies, "curve": curve,
              "seconds": round(time.perf_counter() - began, 1)}  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""How the paired change is read as a deformation: demons smoothing x w, on validation subjects (never the reported).

    python benchmarks/deformation_settings.py valid12v3/manifest.csv --cache runs/deformation_cache \
        --out benchmarks/results/deformation_settings.json

For each subject (the manifest's subjects balanced by direction, seed 0, the product's sampling) the paired run's two
outputs per w are cached (``--cache``: a subject already there is not sampled again); then every smoothing of
imaging/deformation.estimate_warp is scored against the truth, beside the intensity change of the same run: R² of the
change pooled over subjects, Pearson r, the change's size relative to the true change's, the regional volume change
read with evaluation/volumes.py (hippocampi, ventricles) against the truth's, the flip by the explained classifier and
the judge, and the smallest Jacobian determinant.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import numpy as np
import SimpleITK as sitk
from tqdm import tqdm

SMOOTHINGS = (0.5, 1.0, 2.0, 4.0)  # mm, the demons field's Gaussian (imaging/deformation.SMOOTHING)
SWEEP = (1.0, 2.0, 4.0, 6.0, 8.0)


class SubjectTruth(NamedTuple):
    """A subject's scan on a model's grid and what the outputs of a run on it are scored against."""

    prepared: object  # evaluation/subjects.prepare_subject's
    unit: np.ndarray
    mask: np.ndarray
    truth: np.ndarray
    ruler: object  # evaluation/measures.subject_ruler's
    before: dict[str, float]
    true_volume: dict[str, float]
    size: float


def subject_truth(subject, cfg) -> SubjectTruth:
    """The scan on ``cfg``'s grid, its true counterfactual in the same scaling, the volume ruler with the regional
    volumes of the scan and their true change (percent), and the size of the true change inside the brain: read one
    way by every benchmark that scores a subject's outputs against the truth."""
    from ControlCGLib.evaluation.measures import subject_ruler
    from ControlCGLib.evaluation.subjects import prepare_subject

    prepared = prepare_subject(subject, cfg.grid, cfg.intensity)
    unit, mask = prepared.model_input, prepared.mask
    truth = prepared.same_scaling(sitk.ReadImage(str(subject.true_counterfactual)))
    ruler = subject_ruler(subject, prepared, unit, mask)
    before = ruler.volumes(unit)
    true_volume = ruler.change_percent(truth, before)
    size = float(np.linalg.norm((truth - unit)[mask]))
    return SubjectTruth(prepared, unit, mask, truth, ruler, before, true_volume, size)


def cached_outputs(subject, model, prepared, folder: Path, scales) -> dict[str, np.ndarray]:
    """The paired run's two ends (and its intensity change) per w, sampled once per subject."""
    from ControlCGLib.evaluation.subjects import model_tensor
    from ControlCGLib.pipeline import change_ends, shown_counterfactual
    from ControlCGLib.sampling.baselines import Method, run_method
    from ControlCGLib.sampling.settings import product_sampling

    path = folder / f"{subject.subject}.npz"
    if path.exists():
        return dict(np.load(path))
    cfg = model.config
    sampling = product_sampling(cfg.name, precision="bf16")  # what "auto" gives on a bf16 CPU, the kv stride its own
    y0 = model_tensor(prepared.model_input, cfg.intensity)
    ours = Method("ours", "ours", paired=True)
    result = run_method(ours, model, y0, subject.label, subject.target, scales, sampling, seed=0)
    out = {}
    for w in scales:
        unit, mask = prepared.model_input, prepared.mask
        out[f"src{w:g}"], out[f"tgt{w:g}"] = change_ends(result, w, unit, mask, cfg.intensity)
        out[f"int{w:g}"] = shown_counterfactual(result, w, unit, mask, cfg.intensity)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **out)
    return out


def _verdict(classifier, volume) -> str:
    verdict = classifier.verdict(volume)
    return max(verdict, key=verdict.get)


def main() -> None:
    from ControlCGLib.evaluation.metrics import change_scores
    from ControlCGLib.evaluation.subjects import balanced, read_simulated
    from ControlCGLib.imaging.deformation import estimate_warp
    from ControlCGLib.model.checkpoints import load_checkpoint
    from ControlCGLib.model.classifier import VolumeClassifier
    from ControlCGLib.resources import classifier_dir, diffusion_dir, judge_dir

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("manifest")
    p.add_argument("--subjects", type=int, default=12)
    p.add_argument("--cache", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    model = load_checkpoint(diffusion_dir())
    cfg = model.config
    explained = VolumeClassifier(load_checkpoint(classifier_dir()))
    judge = VolumeClassifier(load_checkpoint(judge_dir()))
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for s in tqdm(balanced(read_simulated(args.manifest), args.subjects), desc="subjects"):
        prepared, unit, mask, truth, ruler, before, true_volume, size = subject_truth(s, cfg)
        ends = cached_outputs(s, model, prepared, Path(args.cache), SWEEP)
        direction = f"{s.label}->{s.target}"

        shown = [("truth", 0.0, truth, None)]
        for w in SWEEP:
            shown.append(("intensity", w, ends[f"int{w:g}"], None))
            for sd in SMOOTHINGS:
                warp = estimate_warp(ends[f"src{w:g}"], ends[f"tgt{w:g}"], prepared.grid, smoothing=sd)
                cf, jacobian = prepared.warped_on_grid(warp), float(warp.jacobian().min())
                shown.append((f"deformation, smoothing {sd:g} mm", w, cf, jacobian))
        for name, w, cf, jacobian in shown:
            scores = change_scores(cf, truth, unit, mask)
            volume = ruler.change_percent(cf, before)
            groups[(direction, name, w)].append(
                {
                    "sse": scores["change_sse"],
                    "sst": scores["change_sst"],
                    "r": scores["change_r"],
                    "size": float(np.linalg.norm((cf - unit)[mask])) / size,
                    "hippocampi": volume["hippocampi"],
                    "ventricles": volume["ventricles"],
                    "true_hippocampi": true_volume["hippocampi"],
                    "true_ventricles": true_volume["ventricles"],
                    "flip": _verdict(explained, cf) == s.target,
                    "flip_judge": _verdict(judge, cf) == s.target,
                    "min_jacobian": jacobian,
                }
            )
    table = []
    for (direction, name, w), rs in sorted(groups.items()):

        def mean(key: str, rs=rs) -> float:
            return float(np.mean([r[key] for r in rs if r[key] is not None]))

        jac = [r["min_jacobian"] for r in rs if r["min_jacobian"] is not None]
        table.append(
            {
                "direction": direction,
                "method": name,
                "w": w,
                "n": len(rs),
                "change_r2_pooled": 1 - sum(r["sse"] for r in rs) / sum(r["sst"] for r in rs),
                "change_r": mean("r") if name != "truth" else 1.0,
                "size_vs_true": mean("size"),
                **{k: mean(k) for k in ("hippocampi", "ventricles", "true_hippocampi", "true_ventricles")},
                "flip": mean("flip"),
                "flip_judge": mean("flip_judge"),
                "min_jacobian": min(jac) if jac else None,
            }
        )
    for e in table:
        print(
            f"{e['direction']} {e['method']:32s} w={e['w']:g} R2 {e['change_r2_pooled']:+.3f} r {e['change_r']:.3f} "
            f"size {e['size_vs_true']:.2f} hip {e['hippocampi']:+.1f}/{e['true_hippocampi']:+.1f} "
            f"ven {e['ventricles']:+.1f}/{e['true_ventricles']:+.1f} flip {e['flip']:.2f}/{e['flip_judge']:.2f}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"manifest": args.manifest, "rows": table}, indent=1) + "\n")


if __name__ == "__main__":
    main()

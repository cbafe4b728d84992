"""Two diffusion models on the same validation subjects (never the reported), each on its own grid: which one to embed.

    python benchmarks/model_comparison.py \
        --model Resources/Models/controlcg-cpu/diffusion valid12v3/manifest.csv \
        --model runs/train2mm/model valid12v3_2mm/manifest.csv \
        --cache runs/model_comparison --out benchmarks/results/model_comparison.json

Each ``--model FOLDER MANIFEST`` pair gives a model and the validation cohort simulated on its grid (the same
subjects: ``controlcg simulate`` with the same seed and anatomies at another ``--grid``). For each subject the paired
run's two ends per w are cached (the product's sampling, seed 0; deformation_settings.cached_outputs), the product's
deformation is estimated (imaging/deformation.estimate_warp) and scored against the truth: R² of the change pooled
over subjects on the model's own grid and on the coarsest grid of the compared models (block means of shown and true
change, so that a finer model is not judged on detail the coarser one cannot draw), Pearson r, the size of the change
relative to the true one's, the hippocampal and ventricular volume change against the truth's (percentage points),
the flip by the explained classifier and by the judge (both read the finer grid by block means), the smallest Jacobian
determinant and the seconds per subject.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from deformation_settings import _verdict, cached_outputs, subject_truth
from tqdm import tqdm

SWEEP = (2.0, 4.0, 6.0)


def _block_mean(volume: np.ndarray, grid) -> np.ndarray:
    factors = tuple(a // b for a, b in zip(volume.shape, grid))
    if factors == (1, 1, 1):
        return volume
    t = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32))[None, None]
    return torch.nn.functional.avg_pool3d(t, factors)[0, 0].numpy()


def score_model(folder: Path, manifest: str, n: int, cache: Path, coarse_grid) -> tuple[dict, list[dict]]:
    from ControlCGLib.evaluation.subjects import balanced, read_simulated
    from ControlCGLib.imaging.deformation import estimate_warp
    from ControlCGLib.model.checkpoints import WEIGHTS, file_sha256, load_checkpoint
    from ControlCGLib.model.classifier import VolumeClassifier
    from ControlCGLib.resources import classifier_dir, judge_dir

    model = load_checkpoint(folder)
    cfg = model.config
    weights_id = file_sha256(folder / WEIGHTS)[:12]  # a cache per weights: a later checkpoint is sampled anew
    explained = VolumeClassifier(load_checkpoint(classifier_dir()))
    judge = VolumeClassifier(load_checkpoint(judge_dir()))
    groups: dict[tuple, list[dict]] = defaultdict(list)
    seconds = []
    for s in tqdm(balanced(read_simulated(manifest), n), desc=f"{cfg.name} subjects"):
        began = time.perf_counter()
        prepared, unit, mask, truth, ruler, before, true_volume, size = subject_truth(s, cfg)
        ends = cached_outputs(s, model, prepared, cache / weights_id, SWEEP)
        direction = f"{s.label}->{s.target}"
        coarse_mask = _block_mean(mask.astype(np.float32), coarse_grid) > 0.5
        coarse_unit, coarse_truth = _block_mean(unit, coarse_grid), _block_mean(truth, coarse_grid)
        for w in SWEEP:
            warp = estimate_warp(ends[f"src{w:g}"], ends[f"tgt{w:g}"], prepared.grid)
            cf = prepared.warped_on_grid(warp)
            true_change, shown_change = (truth - unit)[mask], (cf - unit)[mask]
            coarse_true = (coarse_truth - coarse_unit)[coarse_mask]
            coarse_shown = (_block_mean(cf, coarse_grid) - coarse_unit)[coarse_mask]
            volume = ruler.change_percent(cf, before)
            groups[(direction, w)].append(
                {
                    "sse": float(((shown_change - true_change) ** 2).sum()),
                    "sst": float((true_change**2).sum()),
                    "coarse_sse": float(((coarse_shown - coarse_true) ** 2).sum()),
                    "coarse_sst": float((coarse_true**2).sum()),
                    "r": float(np.corrcoef(shown_change, true_change)[0, 1]),
                    "size": float(np.linalg.norm(shown_change)) / size,
                    "hippocampi_error": abs(volume["hippocampi"] - true_volume["hippocampi"]),
                    "ventricles_error": abs(volume["ventricles"] - true_volume["ventricles"]),
                    "hippocampi": volume["hippocampi"],
                    "true_hippocampi": true_volume["hippocampi"],
                    "ventricles": volume["ventricles"],
                    "true_ventricles": true_volume["ventricles"],
                    "flip": _verdict(explained, cf) == s.target,
                    "flip_judge": _verdict(judge, cf) == s.target,
                    "min_jacobian": float(warp.jacobian().min()),
                }
            )
        seconds.append(time.perf_counter() - began)
    rows = []
    for (direction, w), rs in sorted(groups.items()):

        def mean(key: str, rs=rs) -> float:
            return float(np.mean([r[key] for r in rs]))

        rows.append(
            {
                "direction": direction,
                "w": w,
                "n": len(rs),
                "change_r2_pooled": 1 - sum(r["sse"] for r in rs) / sum(r["sst"] for r in rs),
                "change_r2_pooled_coarse": 1 - sum(r["coarse_sse"] for r in rs) / sum(r["coarse_sst"] for r in rs),
                "min_jacobian": min(r["min_jacobian"] for r in rs),
                **{
                    k: mean(k)
                    for k in (
                        "r", "size", "hippocampi_error", "ventricles_error", "hippocampi", "true_hippocampi",
                        "ventricles", "true_ventricles", "flip", "flip_judge",
                    )
                },
            }
        )  # fmt: skip
    about = {
        "folder": str(folder),
        "preset": cfg.name,
        "grid": list(cfg.grid),
        "steps": model.provenance.get("steps"),
        "weights_sha256": file_sha256(folder / WEIGHTS),
        "manifest": manifest,
        "seconds_per_subject": float(np.mean(seconds)),
    }
    return about, rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs=2, action="append", metavar=("FOLDER", "MANIFEST"), required=True)
    p.add_argument("--subjects", type=int, default=12)
    p.add_argument("--cache", required=True, help="paired outputs per model preset, reused when present")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    from ControlCGLib.model.checkpoints import read_checkpoint_config

    grids = [read_checkpoint_config(folder)[0].grid for folder, _ in args.model]
    coarse = tuple(min(g[i] for g in grids) for i in range(3))
    report = {"coarse_grid": list(coarse), "models": []}
    for folder, manifest in args.model:
        about, rows = score_model(Path(folder), manifest, args.subjects, Path(args.cache), coarse)
        report["models"].append({**about, "rows": rows})
        for e in rows:
            print(
                f"{about['preset']:8s} {e['direction']} w={e['w']:g} R2 {e['change_r2_pooled']:+.3f} "
                f"(on {list(coarse)}: {e['change_r2_pooled_coarse']:+.3f}) r {e['r']:.3f} size {e['size']:.2f} "
                f"hip {e['hippocampi']:+.1f}/{e['true_hippocampi']:+.1f} (|err| {e['hippocampi_error']:.1f}) "
                f"ven {e['ventricles']:+.1f}/{e['true_ventricles']:+.1f} (|err| {e['ventricles_error']:.1f}) "
                f"flip {e['flip']:.2f}/{e['flip_judge']:.2f}",
                flush=True,
            )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()

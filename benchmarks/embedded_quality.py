"""Quality of the embedded model on held-out simulated subjects (docs/embedded_quality).

    controlcg simulate --out heldout --n 40 --grid 40 48 40 --seed 1   # training used seed 0
    python benchmarks/embedded_quality.py --cohort heldout/manifest.csv --out docs/embedded_quality

Prints and writes (rows.csv, summary.json): classifier accuracy on the held-out inputs; per w and per direction the
flip rate (share of counterfactuals the embedded classifier assigns to the target class), SSIM to the input, SSIM to
the true counterfactual and the AUROC of |saliency| against the true change map.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ControlCGLib.defaults import PAPER_START_STRENGTH
from ControlCGLib.evaluation.measures import OURS, EvaluationSettings, measure_subject, summarise
from ControlCGLib.evaluation.subjects import balanced, read_simulated
from ControlCGLib.figures import montage
from ControlCGLib.model.checkpoints import load_checkpoint
from ControlCGLib.resources import classifier_dir, diffusion_dir
from ControlCGLib.sampling.settings import InjectionConfig, SamplingConfig


def _picture(path: Path, subject, images: dict, rows: list[dict]) -> None:
    ws = [w for method, w in (k for k in images if isinstance(k, tuple)) if method == OURS]
    columns = {f"input ({subject.label})": images["input"], f"true {subject.target}": images["truth"]}
    saliency = {f"true {subject.target}": images["truth"] - images["input"]}
    for w, r in zip(ws, rows):
        key = f"w={w:g}\np({subject.target})={r['p_target']:.2f}"
        columns[key] = images[(OURS, w)]
        saliency[key] = images[(OURS, w)] - images["input"]
    montage(path, columns, saliency, title=f"{subject.subject}: {subject.label} -> {subject.target}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cohort", required=True, help="simulated manifest.csv of held-out subjects")
    p.add_argument("--out", required=True)
    p.add_argument("--model", default=None)
    p.add_argument("--classifier", default=None)
    p.add_argument("--n", type=int, default=None, help="N subjects only, half of each class (the first in the file)")
    p.add_argument("--w", type=float, nargs="+", default=[0.0, 2.0, 4.0, 6.0])
    p.add_argument("--steps", type=int, default=SamplingConfig.steps)
    p.add_argument("--start-strength", type=float, nargs="+", default=[PAPER_START_STRENGTH])
    p.add_argument("--no-injection", action="store_true")
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.model or diffusion_dir())
    classifier = load_checkpoint(args.classifier or classifier_dir())
    subjects = read_simulated(args.cohort)
    subjects = balanced(subjects, args.n)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    t0 = time.perf_counter()
    with tqdm(total=len(subjects) * len(args.start_strength), desc="held-out subjects", unit="run") as bar:
        for strength in args.start_strength:
            settings = EvaluationSettings(
                scales=tuple(args.w),
                default_w=args.w[0],
                steps=args.steps,
                start_strength=strength,
                baselines=(),  # ours alone
                injection=None if args.no_injection else InjectionConfig(),
                precision=args.precision,
                axioms=False,
                anchors=False,
            )
            shown = set()
            for i, s in enumerate(subjects):
                images: dict = {}
                for r in measure_subject(model, classifier, None, s, settings, seed=i, images=images):
                    rows.append({"start_strength": strength, **{k: v for k, v in r.items() if k != "features"}})
                if s.label not in shown:  # one picture per direction and start strength
                    shown.add(s.label)
                    _picture(out / f"{s.label}_to_{s.target}_start{strength:g}.png", s, images, rows[-len(args.w) :])
                bar.update(1)
    with open(out / "rows.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    inputs = {r["subject"]: r["input_correct"] for r in rows}
    summary = {
        "classifier_accuracy": float(np.mean(list(inputs.values()))),
        "subjects": len(inputs),
        "steps": args.steps,
        "injection": not args.no_injection,
        "wall_seconds": time.perf_counter() - t0,
        "by_start_strength": {
            f"{s:g}": summarise([r for r in rows if r["start_strength"] == s]) for s in args.start_strength
        },
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"classifier accuracy on {len(inputs)} held-out inputs: {summary['classifier_accuracy']:.3f}")
    for s, by_w in summary["by_start_strength"].items():
        for w, by_dir in by_w.items():
            a = by_dir["all"]
            print(
                f"start {s} {w}: flip {a['flipped']['mean']:.2f}  ssim {a['ssim']['mean']:.3f}  "
                f"ssim_true_cf {a['ssim_true_cf']['mean']:.3f}  saliency_auroc {a['saliency_auroc']['mean']:.3f}  "
                + "  ".join(f"{d}: flip {e['flipped']['mean']:.2f}" for d, e in by_dir.items() if d != "all")
            )


if __name__ == "__main__":
    main()

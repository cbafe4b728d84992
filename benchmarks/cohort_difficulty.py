"""How hard cohort v2 is for the embedded-size classifier: held-out accuracy against the strength of the disease.

    python benchmarks/cohort_difficulty.py --work /tmp/difficulty --strengths 0.5 1.0 1.5

For each strength f (the disease's ventricle push, hippocampal pull and cortical loss at f times cohort v1's; age,
anatomy and acquisition as cohort v2's defaults): simulate a training cohort on the training anatomies and a test
cohort on anatomies never trained on, train the ``cpu`` classifier preset on the first (as ``controlcg train
classifier`` does) and measure its accuracy on the second. cohort v2's disease strength (1.5) was
chosen from this curve (docs/data.md: a classifier that is good, not perfect). Writes curve.json and curve.png
in --work; the last line is ``accuracy_at_default=X`` (at 1.5).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ControlCGLib.data.simulator import COHORT_V1, COHORT_V2, write_cohort
from ControlCGLib.evaluation.subjects import read_simulated, real_example
from ControlCGLib.model.checkpoints import load_checkpoint
from ControlCGLib.model.classifier import predict_proba

TRAIN = ("icbm2009a", "colin27", "mni152nlin6", "oasis")
TEST = ("cit168", "cat12")
GRID = (40, 48, 40)


def accuracy(model, manifest: Path) -> tuple[float, int]:
    subjects = read_simulated(manifest)
    names = list(model.config.class_names)
    volumes = torch.stack(
        [
            torch.from_numpy(np.asarray(real_example(s, model.config.grid, model.config.intensity)["volume"]))[None]
            for s in subjects
        ]
    ).float()
    predicted = predict_proba(model, volumes).numpy().argmax(1)
    labels = np.array([names.index(s.label) for s in subjects])
    return float((predicted == labels).mean()), len(subjects)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", required=True)
    p.add_argument("--strengths", type=float, nargs="+", default=[0.5, 1.0, 1.5])
    p.add_argument("--n-train", type=int, default=160)
    p.add_argument("--n-test", type=int, default=40)
    p.add_argument("--steps", type=int, default=600, help="classifier training steps")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base = COHORT_V2  # the curve that chose cohort v2's disease strength
    curve = []
    for f in args.strengths:
        began = time.perf_counter()
        config = dataclasses.replace(
            base,
            ventricle_push_mm=COHORT_V1.ventricle_push_mm * f,
            hippocampus_pull_mm=COHORT_V1.hippocampus_pull_mm * f,
            cortex_loss=COHORT_V1.cortex_loss * f,
        )
        folder = work / f"strength{f:g}"
        train = write_cohort(
            folder / "train", args.n_train, GRID, seed=0, config=dataclasses.replace(config, anatomies=TRAIN)
        )
        test = write_cohort(
            folder / "test", args.n_test, GRID, seed=1, config=dataclasses.replace(config, anatomies=TEST)
        )
        run = folder / "classifier"
        command = [sys.executable, "-m", "ControlCGLib.cli", "train", "classifier", "--cohort", str(train)]
        command += ["--out", str(run), "--steps", str(args.steps), "--batch-size", "8", "--lr", "3e-3"]
        command += ["--eval-every", "100"]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        model = load_checkpoint(run / "model")
        held_out, n = accuracy(model, test)
        point = {
            "strength": f,
            "held_out_anatomy_accuracy": held_out,
            "test_subjects": n,
            "val_accuracy": model.provenance.get("val_accuracy"),
            "seconds": round(time.perf_counter() - began, 1),
        }
        curve.append(point)
        print(json.dumps(point), flush=True)
    (work / "curve.json").write_text(json.dumps({"train": TRAIN, "test": TEST, "curve": curve}, indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(
        [c["strength"] for c in curve],
        [c["held_out_anatomy_accuracy"] for c in curve],
        "-o",
        label="held-out anatomies",
    )
    ax.plot([c["strength"] for c in curve], [c["val_accuracy"] for c in curve], "--s", label="validation (seen)")
    ax.axhspan(0.85, 0.95, color="green", alpha=0.1, label="target 0.85-0.95")
    ax.set_xlabel("disease strength (x cohort v1's; v2's default 1.5)")
    ax.set_ylabel("classifier accuracy")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(work / "curve.png", dpi=110)
    default = next((c for c in curve if c["strength"] == 1.5), None)
    if default:
        print(f"accuracy_at_default={default['held_out_anatomy_accuracy']:.3f}")


if __name__ == "__main__":
    main()

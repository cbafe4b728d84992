"""The realistic cohort end to end: ``prepare`` -> ``train diffusion --cohort prepared.csv`` -> ``evaluate --cohort
prepared.csv`` (evaluation/real_cohort.py: the paper's measures without truths)."""

from __future__ import annotations

import csv
import json

import torch
from conftest import PREPARED_GRID

from ControlCGLib.cli import main
from ControlCGLib.data.cohort import read_cohort
from ControlCGLib.evaluation.real_cohort import chosen_scans, is_real_cohort


def _classifier(folder):
    from ControlCGLib.model.checkpoints import save_checkpoint
    from ControlCGLib.model.config import ClassifierConfig
    from ControlCGLib.model.networks import build_classifier

    torch.manual_seed(0)
    config = ClassifierConfig(grid=PREPARED_GRID, init_features=4, growth_rate=4, block_config=(1,))
    save_checkpoint(build_classifier(config).eval(), config, folder)
    return folder


def test_a_real_cohort_routes_to_the_truth_free_evaluation(prepared_realistic, tmp_path):
    simulated = tmp_path / "manifest.csv"  # a simulated manifest's header: its truths route it to run.py
    simulated.write_text("subject,label,counterfactual_label,image,counterfactual\n")
    assert is_real_cohort(prepared_realistic / "prepared.csv") and not is_real_cohort(simulated)
    chosen = chosen_scans(read_cohort(prepared_realistic / "prepared.csv"), None)
    assert [s.split for s in chosen] == ["test", "test"] and {s.label for s in chosen} == {"CN", "AD"}


def test_prepare_train_evaluate_end_to_end(tmp_path, prepared_realistic, capsys):
    cohort = str(prepared_realistic / "prepared.csv")
    run = tmp_path / "run"
    assert main(["train", "diffusion", "--cohort", cohort, "--out", str(run), "--steps", "1", "--batch-size", "1",
                 "--checkpoint-every", "1", "--precision", "no"]) == 0  # fmt: skip
    trained = next(p.parent for p in run.rglob("config.json") if (p.parent / "weights.safetensors").exists())
    # one step leaves MONAI's zero-initialised output layer at ~0 (no change at all): measure a perturbed copy
    from conftest import randomise

    from ControlCGLib.model.checkpoints import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(trained)
    model = tmp_path / "perturbed"
    save_checkpoint(randomise(loaded, std=0.02), loaded.config, model)
    classifier = _classifier(tmp_path / "classifier")
    out = tmp_path / "evaluation"
    code = main(["evaluate", "--cohort", cohort, "--out", str(out), "--fast", "--model", str(model),
                 "--classifier", str(classifier), "--judge", str(classifier), "--steps", "2", "--w", "4",
                 "--seeds", "0", "1", "--threads", "1", "--augment-cohort", cohort,
                 "--augment-steps", "2"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "real_cohort.json").read_text())
    at = summary["per_w"]["4"]
    assert summary["subjects"] == 2 and summary["by_class"] == {"AD": 1, "CN": 1}
    assert 0 < at["ssim"] <= 1 and at["mse"] >= 0 and at["flip"] in (0.0, 0.5, 1.0) and at["flip_judge"] is not None
    assert set(summary["kid"]) == {"rAD2gAD", "rAD2gCN", "rCN2gAD", "rCN2gCN"}  # one scan a class: too few for a KID
    assert "hippocampi" in at["regional_change"] and at["mean_abs_change"] > 0
    assert summary["seed_correlation"] is not None
    with open(out / "rows.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2  # scans x seeds at the one w
    table3 = summary["augmentation"]  # two real training scans, alone and with ours' two counterfactuals
    assert (table3["none"]["train_real"], table3["none"]["train_generated"]) == (2, 0)
    assert (table3["ours"]["train_real"], table3["ours"]["train_generated"]) == (2, 2)
    report = (out / "real_cohort.md").read_text(encoding="utf-8")
    assert "Table 1" in report and "Table 3" in report


def test_summary_pools_subjects_and_measures_the_kids():
    import numpy as np

    from ControlCGLib.evaluation.measures import EvaluationSettings
    from ControlCGLib.evaluation.real_cohort import markdown, summarise

    rng = np.random.default_rng(0)
    measured = []
    for i, label in enumerate(["CN", "CN", "AD", "AD"]):
        target = "AD" if label == "CN" else "CN"
        rows = [
            {"subject": f"s{i}", "w": 4.0, "seed": seed, "ssim": 0.9, "mse": 0.01 * i, "mean_abs_change": 0.02,
             "p_target": 0.7, "flip": seed == 0, "flip_judge": True, "darker_than_scan": 0.0, "change_hippocampi": -0.1}
            for seed in (0, 1)
        ]  # fmt: skip
        features = rng.normal(size=8) + (1.0 if label == "AD" else 0.0)
        measured.append({"rows": rows, "seed_correlation": 0.5, "real": features, "generated": features + 0.1,
                         "label": label, "target": target, "subject": f"s{i}"})  # fmt: skip
    summary = summarise(measured, EvaluationSettings(scales=(4.0,), default_w=4.0, seeds=(0, 1)))
    at = summary["per_w"]["4"]
    assert at["flip"] == 0.5 and at["flip_judge"] == 1.0 and at["mse"] == 0.015 and at["mse_ci"] is not None
    assert all(v is not None for v in summary["kid"].values()) and summary["seed_correlation"] == 0.5
    summary["settings"] = {"scans": 4, "cohort": "c.csv", "seeds": [0, 1], "seconds": 1.0, "processes": 1,
                           "default_w": 4.0}  # fmt: skip
    assert "rCN2gAD" in markdown(summary)

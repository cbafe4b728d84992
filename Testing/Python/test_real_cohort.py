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
                 "--classifier", str(classifier), "--judge", str(classifier), "--steps", "2", "--w", "0", "4",
                 "--seeds", "0", "1", "--threads", "1", "--augment-cohort", cohort, "--augment-steps", "2",
                 "--baselines", "ILVR-1", "--ablations"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "real_cohort.json").read_text())
    methods = summary["methods"]
    # one test scan a class: no other subject of its direction, so no ours-atlas anchor
    assert list(methods) == ["ours", "ILVR-1", "identity"]
    assert summary["subjects"] == 2 and summary["by_class"] == {"AD": 1, "CN": 1}
    assert list(methods["ours"]["per_w"]) == ["0", "4"] and list(methods["ILVR-1"]["per_w"]) == ["4"]
    for name, m in methods.items():
        at = m["per_w"]["4"]
        assert 0 < at["ssim"]["mean"] <= 1 and at["mse"]["mean"] >= 0 and at["flip_judge"]["mean"] is not None, name
        assert set(at["by_direction"]) == {"AD->CN", "CN->AD"}
        assert set(m["kid"]) == {"rAD2gAD", "rAD2gCN", "rCN2gAD", "rCN2gCN"}  # one scan a class: too few for a KID
        assert m["composition_mse"]["mean"] is not None and m["reversibility_mse"]["mean"] is not None, name
    identity = methods["identity"]["per_w"]["4"]
    assert (
        identity["ssim"]["mean"] == 1.0 and identity["mse"]["mean"] == 0.0 and identity["mean_abs_change"]["mean"] == 0
    )
    volumes = identity["by_direction"]["CN->AD"]["volume_change_percent"]
    assert volumes["hippocampi"]["mean"] == 0.0 and volumes["ventricles"]["mean"] == 0.0  # the ruler reads the scan
    ours = methods["ours"]
    assert ours["per_w"]["4"]["mean_abs_change"]["mean"] > 0 and ours["seed_correlation"]["n"] == 2
    assert methods["ours"]["per_w"]["4"]["by_direction"]["CN->AD"]["volume_change_percent"]["hippocampi"]["mean"] != 0
    with open(out / "rows.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 2 * (2 + 1) + 2  # scans x seeds x (ours at two w + ILVR) + identity per scan
    table3 = summary["augmentation"]  # two real training scans, alone and with each method's two counterfactuals
    assert list(table3) == ["none", "ours", "ILVR-1"]
    assert (table3["none"]["train_real"], table3["none"]["train_generated"]) == (2, 0)
    assert all((d["train_real"], d["train_generated"]) == (2, 2) for k, d in table3.items() if k != "none")
    report = (out / "real_cohort.md").read_text(encoding="utf-8")
    assert "Table 1" in report and "Table 3" in report and "| ILVR-1 | CN->AD |" in report
    assert (out / "montage_methods.png").stat().st_size > 0 and (out / "montage_w.png").stat().st_size > 0


def test_the_patient_blind_anchor_is_the_mean_of_the_other_subjects_changes(tmp_path):
    """ours-atlas of a scan = ours' changes of the *other* subjects of its direction, averaged and added to it; a
    direction with one subject gets none; identity measures the input as it is."""
    import numpy as np

    from ControlCGLib.data.cohort import Scan
    from ControlCGLib.evaluation.measures import EvaluationSettings
    from ControlCGLib.evaluation.metrics import mse
    from ControlCGLib.evaluation.real_cohort import OURS_ATLAS, measure_anchors
    from ControlCGLib.model.checkpoints import load_checkpoint

    classifier = load_checkpoint(_classifier(tmp_path / "classifier"))
    rng = np.random.default_rng(0)
    brain = np.zeros(PREPARED_GRID, bool)
    brain[8:32, 10:38, 8:32] = True
    labels = np.where(brain, 3, 0)
    measured = []
    for i, label in enumerate(["CN", "CN", "CN", "AD"]):
        unit = np.clip(rng.uniform(0.3, 0.8, PREPARED_GRID), 0, 1).astype(np.float32) * brain
        change = np.where(brain, 0.05 * (i + 1), 0.0).astype(np.float32)
        scan = Scan(row=i + 2, image=f"s{i}.nii.gz", label=label, subject=f"s{i}")
        target = "AD" if label == "CN" else "CN"
        measured.append({"rows": [], "generated": {}, "unit": unit, "brain": brain, "ours_change": change,
                         "label": label, "target": target, "subject": f"s{i}", "scan": scan})  # fmt: skip
    measure_anchors(measured, classifier, None, EvaluationSettings(scales=(4.0,), default_w=4.0), labels)
    first = {r["method"]: r for r in measured[0]["rows"]}
    expected = np.clip(measured[0]["unit"] + (0.10 + 0.15) / 2 * brain, 0, 1) * brain  # subjects 1 and 2
    assert abs(first[OURS_ATLAS]["mse"] - mse(measured[0]["unit"], expected)) < 1e-9
    assert first["identity"]["mse"] == 0.0 and first["identity"]["composition_mse"] == 0.0
    assert {r["method"] for r in measured[3]["rows"]} == {"identity"}  # the only AD subject: no atlas of others
    assert set(measured[0]["generated"]) == {"identity", OURS_ATLAS}


def test_summary_pools_subjects_and_measures_the_kids():
    import numpy as np

    from ControlCGLib.evaluation.measures import EvaluationSettings
    from ControlCGLib.evaluation.real_cohort import markdown, summarise

    rng = np.random.default_rng(0)
    measured = []
    for i, label in enumerate(["CN", "CN", "AD", "AD"]):
        target = "AD" if label == "CN" else "CN"
        rows = [
            {"subject": f"s{i}", "method": "ours", "direction": f"{label}->{target}", "w": 4.0, "seed": seed,
             "ssim": 0.9, "mse": 0.01 * i, "mean_abs_change": 0.02, "p_target": 0.7, "flip": seed == 0,
             "flip_judge": True, "darker_than_scan": 0.0, "change_hippocampi": -0.1, "dv_hippocampi": -2.0 * i,
             "composition_mse": 0.001 if seed == 0 else None}
            for seed in (0, 1)
        ]  # fmt: skip
        features = rng.normal(size=8) + (1.0 if label == "AD" else 0.0)
        measured.append({"rows": rows, "seed_correlation": {"ours": 0.5}, "real": features,
                         "generated": {"ours": features + 0.1}, "label": label, "target": target,
                         "subject": f"s{i}"})  # fmt: skip
    summary = summarise(measured, EvaluationSettings(scales=(4.0,), default_w=4.0, seeds=(0, 1)))
    ours = summary["methods"]["ours"]
    at = ours["per_w"]["4"]
    assert at["flip"]["mean"] == 0.5 and at["flip_judge"]["mean"] == 1.0 and at["mse"]["mean"] == 0.015
    assert at["mse"]["ci"] is not None and at["flip"]["n"] == 4
    assert at["by_direction"]["CN->AD"]["volume_change_percent"]["hippocampi"]["mean"] == -1.0  # subjects 0 and 1
    assert at["by_direction"]["AD->CN"]["volume_change_percent"]["hippocampi"]["mean"] == -5.0  # subjects 2 and 3
    assert all(v is not None for v in ours["kid"].values()) and ours["seed_correlation"]["mean"] == 0.5
    assert ours["composition_mse"]["mean"] == 0.001
    summary["settings"] = {"scans": 4, "cohort": "c.csv", "seeds": [0, 1], "seconds": 1.0, "processes": 1,
                           "default_w": 4.0}  # fmt: skip
    report = markdown(summary)
    assert "KID rCN2gAD" in report and "| ours | CN->AD | -1 [" in report  # the hippocampi's volume first


def test_the_realistic_cohort_holds_as_many_test_scans_as_asked(tmp_path):
    import pytest

    from ControlCGLib.data.realistic_cohort import write_realistic_cohort

    with pytest.raises(ValueError, match="test scans per class"):
        write_realistic_cohort(tmp_path / "none", n=4, test=3)
    path = write_realistic_cohort(tmp_path / "c", n=10, spacing=(6.0, 6.0, 6.0), refusals=False, test=2)
    rows = read_cohort(path)
    for label in ("CN", "AD"):
        assert [s.split for s in rows if s.label == label] == ["train", "train", "val", "test", "test"]

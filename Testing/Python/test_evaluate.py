"""``controlcg evaluate`` in its fast setting on a tiny cohort with tiny models (proves the pipeline, not the numbers:
the full setting on the embedded model is committed as docs/evaluation/), the baselines' defining properties, the
new metrics, and the torchrun sharding (two processes give the rows one process gives)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import randomise, tiny_config

from ControlCGLib.cli import main
from ControlCGLib.evaluation.measures import ABLATIONS, EvaluationSettings
from ControlCGLib.evaluation.metrics import kid, saliency_dice
from ControlCGLib.model.checkpoints import save_checkpoint
from ControlCGLib.model.config import ClassifierConfig
from ControlCGLib.model.networks import ClassConditionalUNet, build_classifier
from ControlCGLib.sampling.baselines import PAPER_BASELINES, Method, ddim_invert, ilvr, low_pass, run_method
from ControlCGLib.sampling.settings import SamplingConfig

GRID = (16, 16, 16)
REQUIRED = {"ssim", "mse", "flip_rate", "ssim_true_cf", "mse_true_cf", "saliency_auroc", "composition_mse"}
REQUIRED |= {"reversibility_mse", "kid_all", "rCN2gAD", "rAD2gAD", "rCN2gCN", "rAD2gCN"}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    config = tiny_config(grid=GRID)
    save_checkpoint(randomise(ClassConditionalUNet(config)), config, root / "diffusion", provenance={"what": "test"})
    for name, width in (("classifier", 4), ("judge", 6)):
        c = ClassifierConfig(grid=GRID, init_features=width, growth_rate=4, block_config=(2, 2), norm="group")
        save_checkpoint(build_classifier(c), c, root / name, provenance={"what": "test"})
    return root


def _evaluate(args, models, out):
    return [
        "evaluate",
        *args,
        "--out",
        str(out),
        "--fast",
        "--model",
        str(models / "diffusion"),
        "--classifier",
        str(models / "classifier"),
        "--judge",
        str(models / "judge"),
        "--threads",
        "1",
    ]


def test_fast_evaluation_writes_the_report(simulated_manifest, tiny_models, tmp_path):
    out = tmp_path / "report"
    args = ["--cohort", str(simulated_manifest), "--augment-cohort", str(simulated_manifest)]
    assert main(_evaluate(args, tiny_models, out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    names = ["ours", *ABLATIONS, *[m.name for m in PAPER_BASELINES]]
    # two subjects, one per direction: an atlas from the cohort's other subjects, no other subject to swap with
    assert list(summary["methods"]) == [*names, "identity", "atlas", "oracle"]
    # paired: toward its own class the shown counterfactual is the input (the unpaired model output is not)
    assert summary["methods"]["ours"]["composition_mse"] == 0
    for paired in ("ours-no-blend", "ours-injection", "ours-inversion-start"):
        assert summary["methods"][paired]["composition_mse"] == 0, paired
    assert summary["methods"]["ours-unpaired"]["composition_mse"] > 0
    # the anchors: doing nothing is the floor, the truth the ceiling, of every metric against the truth
    identity, oracle = summary["methods"]["identity"], summary["methods"]["oracle"]
    assert identity["ssim"] == pytest.approx(1.0) and identity["mse"] == 0 and identity["saliency_dice"] == 0
    assert identity["saliency_auroc"] == pytest.approx(0.5) and identity["composition_mse"] == 0
    assert oracle["ssim_true_cf"] == pytest.approx(1.0, abs=1e-3) and oracle["saliency_auroc"] > 0.99
    assert oracle["mse_true_cf"] < 1e-4 and oracle["saliency_dice"] > 0.95
    assert identity["change_r2"] == pytest.approx(0.0) and identity["change_r2_pooled"] == pytest.approx(0.0)
    assert oracle["change_r2_fit"] > 0.99 and oracle["change_r"] > 0.99 and oracle["sign_agreement"] > 0.99
    atlas = summary["methods"]["atlas"]
    assert atlas["change_r2"] < 1 and all(n > 0 for n in summary["settings"]["atlas_pool"]["subjects"].values())
    assert set(summary["paired"]) == {*names[1:], "identity", "atlas", "oracle"}
    assert summary["paired"]["oracle"]["change_r2"]["mean_difference"] < 0  # nothing beats the truth
    # leave-anatomy-out: the tiny models record no anatomies, so only the ICBM template counts as seen
    assert summary["anatomies"]["train"] == ["icbm2009a"] and summary["anatomies"]["held_out"]
    assert 0 <= summary["classifier_accuracy"] <= 1 and set(summary["classifier_accuracy_split"]) == {
        "seen",
        "held_out_anatomy",
    }
    for name in ("ours", "identity", "oracle"):
        held_out = summary["methods"][name]["held_out_anatomy"]
        assert held_out["n"] > 0 and {"ssim_true_cf", "saliency_auroc", "flip_rate_judge"} <= set(held_out)
    lo, hi = summary["w_sweep"][-1]["flip_rate_judge_ci"]
    assert 0 <= lo <= summary["w_sweep"][-1]["flip_rate_judge"] <= hi <= 1
    for name in names:
        assert REQUIRED <= set(summary["methods"][name]), name
        assert summary["methods"][name]["composition_mse"] is not None
        assert {"CN->AD", "AD->CN"} == set(summary["methods"][name]["by_direction"])
    assert [e["w"] for e in summary["w_sweep"]] == [0.0, 4.0]
    assert all(REQUIRED <= set(e) for e in summary["w_sweep"])
    assert set(summary["augmentation"]) == {"none", *names}
    assert all(0 <= a <= 1 for a in summary["augmentation"].values())
    report = (out / "report.md").read_text()
    for heading in ("Table 1", "Table 2", "Table 3", "Per direction", "never seen in training", "Wilson", "signed"):
        assert heading in report
    for picture in ("tradeoff.png", "montage_w.png", "montage_methods.png"):
        assert (out / picture).stat().st_size > 10_000
    with open(out / "rows.csv") as f:
        rows = list(csv.DictReader(f))
    # subjects x seeds x (two w of ours and of ours-intensity + four more ablations + five baselines + identity and
    # oracle), and per seed the atlas of the AD->CN subject: the cohort's one CN->AD subject is the one evaluated, so
    # it has no atlas
    assert len(rows) == 2 * 2 * (2 + 2 + 4 + 5 + 2) + 2


def test_torchrun_shards_give_the_rows_of_one_process(simulated_manifest, tiny_models, tmp_path):
    args = ["--cohort", str(simulated_manifest)]
    assert main(_evaluate(args, tiny_models, tmp_path / "one")) == 0
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    cmd += ["ControlCGLib.cli", *_evaluate(args, tiny_models, tmp_path / "two")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = ((tmp_path / d / "rows.csv").read_text().splitlines() for d in ("one", "two"))
    timing = one[0].split(",").index("seconds")  # the one column that differs run to run
    strip = lambda lines: [",".join(c for i, c in enumerate(line.split(",")) if i != timing) for line in lines]  # noqa: E731
    assert strip(one) == strip(two)
    assert json.loads((tmp_path / "two" / "summary.json").read_text())["settings"]["processes"] == 2


def test_low_pass_keeps_coarse_structure_only():
    x = torch.zeros(1, 1, 8, 8, 8)
    x[..., ::2] = 1.0  # the finest stripes: removed entirely by n = 2
    assert torch.allclose(low_pass(x, 2), torch.full_like(x, 0.5), atol=1e-6)
    smooth = torch.linspace(0, 1, 8).expand(1, 1, 8, 8, 8).contiguous()
    assert (low_pass(smooth, 2) - smooth).abs().mean() < 0.05
    with pytest.raises(ValueError, match="not divisible"):
        low_pass(torch.zeros(1, 1, 6, 6, 6), 4)


def test_ilvr_result_keeps_the_inputs_low_frequencies(tiny_model, tiny_input):
    sampling = SamplingConfig(steps=10)
    guided = ilvr(tiny_model, tiny_input, 1, [3.0], sampling, factor=2, start_strength=0.5, seed=0)[3.0][None, None]
    free = run_method(Method("free", "ours", start_strength=0.5), tiny_model, tiny_input, 0, 1, [3.0], sampling, seed=0)
    free = free[3.0][None, None]
    y = tiny_input[None, None]
    gap = lambda x: float((low_pass(x, 2) - low_pass(y, 2)).abs().mean())  # noqa: E731
    assert gap(guided) < 0.5 * gap(free)  # the low frequencies follow the input...
    assert float((guided - y).abs().mean()) > 1e-3  # ...the rest is the model's


def test_ddim_inversion_start_is_deterministic_and_reaches_the_start(tiny_model, tiny_input):
    half = SamplingConfig(steps=10, start_strength=0.5)
    a = ddim_invert(tiny_model, tiny_input, 0, half)
    b = ddim_invert(tiny_model, tiny_input, 0, half)
    assert torch.equal(a, b)
    assert not torch.allclose(a[0, 0], tiny_input)
    c = ddim_invert(tiny_model, tiny_input, None, half)  # null-class encoding differs
    assert not torch.allclose(a, c)


def test_every_method_runs_through_one_entry_point(tiny_model, tiny_input):
    methods = (Method("ours", "ours", start_strength=0.3), *PAPER_BASELINES)
    for m in methods:
        out = run_method(m, tiny_model, tiny_input, "CN", "AD", [2.0], SamplingConfig(steps=8), seed=1)
        again = run_method(m, tiny_model, tiny_input, "CN", "AD", [2.0], SamplingConfig(steps=8), seed=1)
        assert torch.equal(out[2.0], again[2.0]), m.name
        assert torch.isfinite(out[2.0]).all()
    with pytest.raises(ValueError, match="start strength"):
        Method("bad", "ilvr", start_strength=0.0)


def test_dice_and_kid():
    mask = np.ones((4, 4, 4), bool)
    truth = np.zeros((4, 4, 4))
    truth[:2] = -0.2
    assert saliency_dice(truth, truth, mask) == pytest.approx(1.0)
    assert saliency_dice(np.zeros_like(truth), truth, mask) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="no changed voxel"):
        saliency_dice(truth, np.zeros_like(truth), mask)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
    assert kid(a, b) < kid(a, b + 3.0)
    # unbiased: two sets of one distribution average to 0 even when each is smaller than the feature dimension
    same = [kid(rng.normal(size=(12, 40)), rng.normal(size=(12, 40))) for _ in range(200)]
    assert abs(np.mean(same)) < 3 * np.std(same) / np.sqrt(len(same))
    assert kid(rng.normal(size=(12, 40)), rng.normal(size=(12, 40)) + 1.0) > 10 * np.std(same)
    with pytest.raises(ValueError, match="at least two"):
        kid(a[:1], b)


def test_region_concentration_is_one_for_a_change_spread_evenly_and_high_where_it_is_focused():
    from ControlCGLib.data.anatomies import REGIONS
    from ControlCGLib.evaluation.real_scans import region_concentration

    labels = np.zeros((10, 10, 10), int)
    labels[:2] = REGIONS["ventricles"]
    labels[2:5] = REGIONS["white matter"]
    labels[5:] = REGIONS["other cortex"]
    brain = np.ones(labels.shape, bool)
    even = region_concentration(np.full(labels.shape, 0.1), labels, brain)
    assert even["ventricles"] == even["white matter"] == even["rest of the cortex"] == 1.0
    assert even["hippocampi"] is None  # a region the scan's grid does not hold
    focused = region_concentration(np.where(labels == REGIONS["ventricles"], 0.1, 0.0), labels, brain)
    assert focused["ventricles"] == pytest.approx(5.0) and focused["white matter"] == 0


def test_real_scans_are_measured_without_ground_truth(tiny_models, tmp_path):
    from ControlCGLib.data.anatomies import head_scan

    out = tmp_path / "real"
    args = ["evaluate", "--real", str(head_scan()), "--out", str(out), "--fast", "--threads", "1"]
    args += ["--model", str(tiny_models / "diffusion"), "--classifier", str(tiny_models / "classifier")]
    assert main(args) == 0
    records = json.loads((out / "real_scans.json").read_text())
    assert len(records) == 1 and records[0]["own_class"] in ("CN", "AD")
    assert records[0]["composition_mse"] >= 0 and set(records[0]["change_toward"]) == {"CN", "AD"}
    assert set(records[0]["change_toward"]["AD"]["concentration"]) == {
        "ventricles",
        "hippocampi",
        "temporal lobes",
        "rest of the cortex",
        "white matter",
        "hippocampi (AAL)",  # the bundled Colin27 head's own hand-drawn hippocampi
    }
    other = "AD" if records[0]["own_class"] == "CN" else "CN"
    toward = records[0]["change_toward"][other]
    assert (
        -1 <= toward["seed_correlation"] <= 1
        and records[0]["change_toward"][records[0]["own_class"]]["seed_correlation"] is None
    )  # a second seed toward the other class only
    assert 0 <= toward["darker_than_scan"] <= 1 and set(toward["mean_change"]) == set(toward["concentration"])
    assert "composition" in (out / "real_scans.md").read_text()
    assert not (out / "summary.json").exists()  # no cohort given: the real-scan measures only


def test_the_colin27_heads_own_hippocampi_land_on_the_registered_ones():
    """Two independent region sources agree on the model grid: AAL's hippocampi drawn on Colin27 (carried by the
    scan's registration) and the ICBM template's labels the product uses."""
    import SimpleITK as sitk

    from ControlCGLib.data.anatomies import REGIONS, head_scan, load_anatomy
    from ControlCGLib.evaluation.real_scans import own_hippocampi
    from ControlCGLib.imaging.geometry import resample
    from ControlCGLib.imaging.native_space import prepare
    from ControlCGLib.imaging.reading import read_scan

    prepared = prepare(read_scan(str(head_scan())), (40, 48, 40))
    aal = own_hippocampi(head_scan(), prepared)
    icbm = resample(load_anatomy("icbm2009a").labels, prepared.grid, interpolator=sitk.sitkNearestNeighbor)
    icbm = sitk.GetArrayFromImage(icbm).astype(int) == REGIONS["hippocampi"]
    dice = 2 * (aal & icbm).sum() / (aal.sum() + icbm.sum())
    assert dice > 0.35, dice  # measured 0.46 on the 4 mm grid (AAL's hippocampi are the larger: 228 voxels to 144)
    assert own_hippocampi(str(head_scan()) + ".other.nii.gz", prepared) is None  # any other scan: none shipped


def test_impossibly_dark_voxels_and_seed_agreement_are_counted():
    from ControlCGLib.evaluation.real_scans import darker_than_the_scan, seed_correlation

    rng = np.random.default_rng(0)
    unit, brain = rng.uniform(0.2, 0.9, (10, 10, 10)), np.ones((10, 10, 10), bool)
    assert darker_than_the_scan(unit, unit, brain) == pytest.approx(0.005, abs=0.002)  # the scan itself
    darker = unit.copy()
    darker[:2] = 0.0  # a fifth of the brain at an intensity no tissue of this scan has
    assert darker_than_the_scan(darker, unit, brain) == pytest.approx(0.2, abs=0.01)
    change = rng.normal(size=unit.shape)
    assert seed_correlation(change, 2 * change, brain) == pytest.approx(1)
    assert abs(seed_correlation(change, rng.normal(size=unit.shape), brain)) < 0.2
    assert seed_correlation(change, np.zeros_like(change), brain) is None


def test_unknown_ablation_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown ablation.*ours-nothing"):
        EvaluationSettings(ablations=("ours-nothing",)).methods()


def test_start_strength_out_of_range_is_refused_before_any_work(tmp_path, capsys):
    from ControlCGLib.cli import main

    cohort = ["--cohort", str(tmp_path / "missing.csv")]
    args = ["evaluate", "--fast", *cohort, "--out", str(tmp_path / "e"), "--start-strength", "1.5"]
    assert main(args) == 2
    assert "--start-strength must lie in [0.05, 1]" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()

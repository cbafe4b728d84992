"""The simulated cohort: reproducible, diffeomorphic, a real class effect with overlap, true counterfactuals; cohort
v3's disease of each subject's own; cohorts v1 and v2 bit for bit."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pytest
import SimpleITK as sitk

from ControlCGLib.cli import main
from ControlCGLib.data.anatomies import REGIONS
from ControlCGLib.data.simulator import (
    AD_SUBTYPES,
    COHORT_V1,
    COHORT_V2,
    MAX_AMPLITUDE,
    CohortSimulator,
    min_jacobian,
    typical_profile,
    write_cohort,
)
from ControlCGLib.imaging.geometry import model_grid, same_geometry
from ControlCGLib.imaging.template import load_template


@pytest.fixture(scope="module")
def sim():
    return CohortSimulator()


def test_same_seed_same_subject_and_subjects_differ(sim):
    a = sim.subject(3, seed=1)
    b = sim.subject(3, seed=1)
    c = sim.subject(4, seed=1)
    assert a[0] == b[0] and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    assert not np.array_equal(a[1], c[1])


def test_deformations_do_not_fold(sim):
    a, c = sim.anatomy, sim.config
    for seed in range(3):
        assert min_jacobian(sim._individual(np.random.default_rng(seed)), a.reference) > 0.1
    for base in c.anatomies:  # the largest pushes a subject can get, at the oldest age, on every base
        b = sim.base(base)
        severe_ad = sim.disease_field(b, c.severity_range[1], 0.0, 1.0)
        cn_turned_ad = sim.disease_field(b, c.counterfactual_severity, c.natural_ventricle, 1.0)
        assert min(min_jacobian(severe_ad, b.reference), min_jacobian(cn_turned_ad, b.reference)) > 0.1, base
    # a v3 subject's disease is made to fold nowhere, whatever its amplitudes
    b = sim.base("cit168")
    extreme = sim.profile(np.random.default_rng(0))
    extreme = type(extreme)("extreme", 0.0, dict.fromkeys(extreme.amplitudes, MAX_AMPLITUDE))
    safe = sim._unfolded(b, c.severity_range[1], c.natural_ventricle, 1.0, extreme)
    assert min_jacobian(sim.disease_field(b, c.severity_range[1], c.natural_ventricle, 1.0, safe), b.reference) >= 0.2
    v1 = CohortSimulator(COHORT_V1)
    assert min_jacobian(v1.disease_field(v1.anatomy, 1.0, v1.config.natural_ventricle, 0.0), a.reference) > 0.1


def test_true_counterfactual_and_change_map(sim):
    record, image, cf, change = sim.subject(0, seed=0, label="CN")
    assert record.label == "CN" and record.counterfactual_label == "AD" and record.severity == 0
    assert np.array_equal(change, cf - image)
    assert record.counterfactual_ventricle_ml > record.ventricle_ml
    # the change lives where the disease acts: mostly inside the brain, strongest around the ventricles
    brain = sitk.GetArrayFromImage(load_template().mask) > 0
    assert np.abs(change[~brain]).sum() < 0.05 * np.abs(change).sum()
    record, image, cf, change = sim.subject(1, seed=0, label="AD")
    assert record.counterfactual_label == "CN" and record.counterfactual_ventricle_ml < record.ventricle_ml


def test_ventricles_separate_the_classes_with_overlap_inside_each(sim):
    volumes = {"CN": [], "AD": []}
    for i in range(12):
        label = "CN" if i % 2 else "AD"
        volumes[label].append(sim.subject(i, seed=5, label=label)[0].ventricle_ml)
    cn, ad = np.array(volumes["CN"]), np.array(volumes["AD"])
    d = (ad.mean() - cn.mean()) / np.sqrt((cn.var(ddof=1) + ad.var(ddof=1)) / 2)
    assert d > 1.2  # a large effect (measured 2.6 on 40 subjects)
    assert cn.std() > 1.0 and ad.std() > 0.5  # but every class varies


def test_write_cohort_on_a_model_grid(tmp_path):
    manifest = write_cohort(tmp_path, 2, grid=(40, 48, 40), seed=2)
    rows = list(csv.DictReader(open(manifest)))
    assert [r["subject"] for r in rows] == ["sim-0002-00000", "sim-0002-00001"]
    assert set(rows[0]) >= {"subject", "label", "severity", "image", "counterfactual", "change", "ventricle_ml"}
    assert set(rows[0]) >= {"hippocampus_ml", "counterfactual_hippocampus_ml", "subtype", "asymmetry", "log_jacobian"}
    ref = model_grid((40, 48, 40), load_template().t1)
    for kind in ("image", "counterfactual", "change", "log_jacobian", "labels"):
        img = sitk.ReadImage(str(tmp_path / rows[1][kind]))
        assert same_geometry(img, ref)
    # the scan's own regions: whole labels, inside the scan's brain, every region the evaluation's ruler reads present
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / rows[1]["labels"])))
    image = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / rows[1]["image"])))
    assert labels.dtype == np.uint8 and set(np.unique(labels)) <= {0, *REGIONS.values()}
    assert {REGIONS["hippocampi"], REGIONS["ventricles"]} <= set(np.unique(labels))
    assert np.mean(image[labels > 0] > 0) > 0.99


def test_simulate_command_refuses_to_overwrite(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    assert main(["simulate", "--out", str(tmp_path), "--n", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err


def _digest(simulator: CohortSimulator, index: int, label: str | None = None) -> str:
    _, image, cf, _ = simulator.subject(index, seed=0, label=label)
    return hashlib.sha256(image.tobytes() + cf.tobytes()).hexdigest()[:16]


def test_cohorts_v1_and_v2_reproduce_bit_for_bit():
    """The embedded models were trained on v2 (and first on v1) and the sample comes from v1, so both must stay what
    they are whatever v3's knobs (digests of the subjects that made that data)."""
    assert _digest(CohortSimulator(COHORT_V1), 0) == "6e6ed2c6e0e26abb"
    v2 = CohortSimulator(COHORT_V2)
    assert _digest(v2, 0) == "198b66e84554ab98"
    assert _digest(v2, 2, "AD") == "fe87314fa25e2151"


def test_v3_subtypes_asymmetry_and_amplitudes_are_drawn_per_subject(sim):
    rng = np.random.default_rng(7)
    profiles = [sim.profile(rng) for _ in range(3000)]
    for subtype in AD_SUBTYPES:
        share = np.mean([p.subtype == subtype.name for p in profiles])
        assert share == pytest.approx(subtype.frequency, abs=0.03), subtype.name
    amplitudes = np.array([list(p.amplitudes.values()) for p in profiles])
    assert amplitudes.max() <= MAX_AMPLITUDE and amplitudes.std(axis=0).min() > 0.2  # every region varies
    asymmetry = np.array([p.asymmetry for p in profiles])
    assert np.abs(asymmetry).max() <= sim.config.asymmetry and asymmetry.std() > 0.1
    left = [p.amplitudes["hippocampus", "left"] > p.amplitudes["hippocampus", "right"] for p in profiles]
    assert 0.3 < np.mean(left) < 0.7  # either side may be the worse one


@pytest.mark.parametrize("index, label", [(0, "CN"), (1, "AD"), (5, "AD")])
def test_v3_true_counterfactual_changes_only_the_disease(sim, index, label):
    record, image, cf, change, log_jacobian, _ = sim.subject_with_volume_change(index, seed=4, label=label)
    base = sim.base(record.anatomy)
    reach = (base.ventricles | base.hippocampi | (sim._cortex_loss_weight(base, typical_profile()) > 0.01)).astype(
        np.uint8
    )
    near = sitk.GetArrayFromImage(sitk.BinaryDilate(sitk.GetImageFromArray(reach), [7, 7, 7])) > 0
    assert np.abs(change[~near]).mean() < 0.05 * np.abs(change[near]).mean()  # away from the disease: nothing
    # the AD side has the smaller hippocampi and the larger ventricles; its volume change shows in the log-Jacobian
    grows = record.counterfactual_ventricle_ml > record.ventricle_ml
    assert grows == (label == "CN")
    shrinks = record.counterfactual_hippocampus_ml <= record.hippocampus_ml
    assert shrinks == (label == "CN") or record.counterfactual_hippocampus_ml == record.hippocampus_ml
    assert np.abs(log_jacobian[~near]).mean() < 0.05 * np.abs(log_jacobian[near]).mean()
    if label == "CN":  # a healthy scan's ventricles sit where the base's do: there the AD truth has more volume
        assert log_jacobian[base.ventricles].mean() > 0
    assert record.subtype in {s.name for s in AD_SUBTYPES}
    if label == "CN":  # nothing in a healthy scan says which AD it would develop: the typical one
        assert record.subtype == "typical" and record.asymmetry == 0

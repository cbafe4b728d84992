"""The simulated cohort: reproducible, diffeomorphic, a real class effect with overlap, true counterfactuals."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk

from ControlCGLib.cli import main
from ControlCGLib.data.simulator import COHORT_V1, CohortSimulator, min_jacobian, write_cohort
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
    ref = model_grid((40, 48, 40), load_template().t1)
    for kind in ("image", "counterfactual", "change"):
        img = sitk.ReadImage(str(tmp_path / rows[1][kind]))
        assert same_geometry(img, ref)


def test_simulate_command_refuses_to_overwrite(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("x")
    assert main(["simulate", "--out", str(tmp_path), "--n", "1"]) == 2
    assert "--overwrite" in capsys.readouterr().err

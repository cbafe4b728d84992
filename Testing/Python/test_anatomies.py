"""The base anatomies (committed copies derived from packages) and cohort v2 on them."""

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk

from ControlCGLib.data.anatomies import REGIONS, anatomy_names, head_scan, load_anatomy
from ControlCGLib.data.anatomy_derivation import SOURCES, segment_tissues
from ControlCGLib.data.simulator import COHORT_V2, CohortSimulator, SimulationConfig
from ControlCGLib.imaging.geometry import same_geometry
from ControlCGLib.imaging.template import load_template


@pytest.mark.parametrize("name", anatomy_names())
def test_every_base_is_a_brain_in_one_form(name):
    a = load_anatomy(name)
    assert same_geometry(a.t1, load_template().t1)  # one grid for every base: the template's 2 mm grid
    mask = a.array("mask") > 0.5
    t1, gm, wm, csf = (a.array(k) for k in ("t1", "gm", "wm", "csf"))
    labels = sitk.GetArrayFromImage(a.labels)
    assert 1500 < mask.sum() * 8 / 1000 < 2100  # mL: brain and its CSF, at the ICBM template's size
    assert t1[~mask].max() == 0 and 0.4 < t1[mask].mean() < 0.9  # skull-stripped, scaled inside the brain
    assert (gm[~mask] == 0).all() and (wm[~mask] == 0).all() and (labels[~mask] == 0).all()
    assert (gm + wm + csf <= 1 + 2 / 255).all() and (labels[mask] > 0).all()
    assert wm[mask].mean() > 0.25 and gm[mask].mean() > 0.25
    assert t1[wm > 0.8].mean() > t1[gm > 0.8].mean() > t1[csf > 0.8].mean()  # T1 contrast of its tissues
    ventricles = labels == REGIONS["ventricles"]
    assert 8 < ventricles.sum() * 8 / 1000 < 60  # mL
    assert csf[ventricles].mean() > 0.5 and t1[ventricles].mean() < t1[wm > 0.8].mean() - 0.2  # on the ventricles
    hippocampi = labels == REGIONS["hippocampi"]
    assert 4 < hippocampi.sum() * 8 / 1000 < 16 and gm[hippocampi].mean() > 0.3
    for region in ("temporal cortex", "parietal cortex", "other cortex", "white matter"):
        assert (labels == REGIONS[region]).sum() > 1000, region


def test_bases_are_distinct_anatomies():
    bases = {n: load_anatomy(n) for n in anatomy_names()}
    t1 = {n: b.array("t1") for n, b in bases.items()}
    brain = {n: b.array("mask") > 0.5 for n, b in bases.items()}
    names = list(t1)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            within = brain[a] | brain[b]
            assert np.abs(t1[a] - t1[b])[within].mean() > 0.04, (a, b)  # measured 0.06-0.12


def test_colin27_head_keeps_its_skull():
    head = sitk.ReadImage(str(head_scan()))
    brain = load_anatomy("colin27")
    assert sitk.GetArrayViewFromImage(head).astype(bool).sum() > 1.3 * sitk.GetArrayViewFromImage(brain.mask).sum()


def test_segmentation_orders_the_tissues_by_intensity():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, size=(20, 20, 20))
    t1 = np.array([0.2, 0.55, 0.85])[truth] + rng.normal(0, 0.04, truth.shape)
    maps = segment_tissues(t1, np.ones(truth.shape, bool))
    guess = np.argmax(np.stack([maps["csf"], maps["gm"], maps["wm"]]), axis=0)
    assert (guess == truth).mean() > 0.98
    assert np.allclose(maps["csf"] + maps["gm"] + maps["wm"], 1.0, atol=1e-5)


@pytest.fixture(scope="module", params=["v2", "v3"])
def v2(request):
    """Cohort v2 and v3 (v2's draws with a disease of each subject's own) on two bases."""
    config = COHORT_V2 if request.param == "v2" else SimulationConfig()
    return CohortSimulator(dataclasses.replace(config, anatomies=("colin27", "oasis")))


def test_cohort_v2_draws_bases_ages_and_acquisitions(v2):
    records = [v2.subject(i, seed=4)[0] for i in range(6)]
    assert {r.anatomy for r in records} == {"colin27", "oasis"}
    assert all(60 <= r.age <= 90 for r in records) and len({r.age for r in records}) == 6
    a, b = v2.subject(2, seed=4), v2.subject(2, seed=4)
    assert a[0] == b[0] and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])


def test_the_true_counterfactual_changes_the_disease_and_not_the_age(v2):
    no_disease = CohortSimulator(
        dataclasses.replace(
            v2.config, ventricle_push_mm=0.0, hippocampus_pull_mm=0.0, cortex_loss=0.0, cortex_thinning_mm=0.0
        )
    )
    for label in ("CN", "AD"):
        record, image, cf, change = no_disease.subject(1, seed=2, label=label)
        assert np.abs(change).max() == 0  # age, anatomy and acquisition alone: the counterfactual is the scan
    # ... while age itself changes the scan: the same subject at another age has larger ventricles
    young, old = (
        CohortSimulator(dataclasses.replace(v2.config, age_range=ages)).subject(1, seed=2, label="CN")
        for ages in ((60.0, 60.0), (90.0, 90.0))
    )
    assert old[0].ventricle_ml > young[0].ventricle_ml + 2 and old[0].age == 90 and young[0].age == 60
    record, image, cf, change = v2.subject(1, seed=2, label="CN")
    assert record.counterfactual_ventricle_ml > record.ventricle_ml and np.abs(change).max() > 0.05


def test_the_run_time_names_are_the_derived_ones():
    assert anatomy_names() == list(SOURCES)

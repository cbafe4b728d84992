"""The module's self-test that checks numbers (ControlCGTest.test_sample_numbers_match_the_reference), run here as
Slicer runs it -- through unittest, the module's own Logic driving the real command line on the bundled sample, with
the stand-ins of slicer_stubs.py for the scene -- against the references stored in the repository
(ControlCGLib/self_test_reference.json); and the comparison itself (ControlCGLib.self_test): every value out of its
tolerance is named, and a value moved past its tolerance fails the self-test's own assertion."""

from __future__ import annotations

import copy
import json
import math
import re
import sys
import time
import unittest
from pathlib import Path

import numpy as np
import pytest

from ControlCGLib import self_test
from ControlCGLib.model.checkpoints import WEIGHTS, file_sha256
from ControlCGLib.resources import classifier_dir, diffusion_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_slicer_logic import module  # noqa: E402, F401  (the fixture)

DRIFTED = "volumes.hippocampi.change_percent"


# --- the stored references --------------------------------------------------------------------------------------------


def test_the_references_are_of_this_run_and_these_models():
    """The file says which run it measured and with which weights; a retrained model must come with new references
    (python -m ControlCGLib.self_test --write-reference)."""
    reference = self_test.read_reference()
    assert {k: v for k, v in reference["run"].items() if k != "input"} == vars(self_test.RUN)
    values = reference["values"]
    assert values["model_sha256"]["value"] == file_sha256(diffusion_dir() / WEIGHTS), "the embedded model changed"
    assert values["classifier_sha256"]["value"] == file_sha256(classifier_dir() / WEIGHTS), "the classifier changed"
    for name, entry in values.items():
        if "tolerance" in entry:  # the stated tolerance is the one the code states
            assert entry["tolerance"] == pytest.approx(self_test.tolerance(name, entry["value"]), abs=1e-6), name
    regions = {name.split(".")[1] for name in values if name.startswith("volumes.")}
    assert regions == {"hippocampi", "ventricles", "temporal cortex", "parietal cortex", "brain"}
    assert {
        "verdict.input.AD",
        "verdict.counterfactual.AD",
        "verdict.raw.AD",
        "saliency.p50",
        "volume_change.p99",
    } <= set(values)
    assert values["source"]["value"] == "CN"  # the sample is a simulated cognitively normal subject


# --- the comparison -------------------------------------------------------------------------------------------------


def _measured_like_the_reference() -> dict:
    return {name: entry["value"] for name, entry in self_test.read_reference()["values"].items()}


def test_every_value_out_of_tolerance_is_named():
    reference = self_test.read_reference()
    measured = _measured_like_the_reference()
    assert self_test.compare(measured, reference) == []
    allowed = reference["values"][DRIFTED]["tolerance"]
    within = {**measured, DRIFTED: measured[DRIFTED] + 0.9 * allowed}
    assert self_test.compare(within, reference) == []
    drifted = {
        **measured,
        DRIFTED: measured[DRIFTED] + 1.1 * allowed,
        "saliency.p99": math.nan,
        "source": "AD",
    }
    del drifted["verdict.raw.AD"]
    drifted["volumes.amygdala.input_ml"] = 1.0
    problems = {p.name: str(p) for p in self_test.compare(drifted, reference)}
    assert set(problems) == {
        DRIFTED,
        "saliency.p99",
        "source",
        "verdict.raw.AD",
        "volumes.amygdala.input_ml",
    }
    pattern = rf"{re.escape(DRIFTED)}: measured -?[\d.]+, reference -?[\d.]+ ± 0\.5 \(off by \+0\.55\)$"
    assert re.match(pattern, problems[DRIFTED]), problems[DRIFTED]
    assert "not measured" in problems["verdict.raw.AD"]
    assert "not in the reference" in problems["volumes.amygdala.input_ml"]
    assert problems["source"] == "source: measured 'AD', reference 'CN'"


def test_measure_reads_the_maps_inside_the_brain_only():
    saliency = np.zeros((4, 4, 4), np.float32)
    change = np.zeros_like(saliency)
    saliency[1:3, 1:3, 1:3] = np.arange(8, dtype=np.float32).reshape(2, 2, 2) - 3.5
    change[1:3, 1:3, 1:3] = 0.1
    values = self_test.measure(
        saliency=saliency,
        volume_change=change,
        volumes={"hippocampi": {"input_ml": 9.5, "counterfactual_ml": 8.6, "change_percent": -9.5}},
        input_verdict={"CN": 0.9, "AD": 0.1},
        verdict={"CN": 0.3, "AD": 0.7},
        raw_verdict={},
        source="CN",
        model_sha256="m",
        classifier_sha256=None,
    )
    assert values["brain_voxels"] == 8 and values["saliency.mean"] == pytest.approx(0.0)
    assert values["saliency.mean_abs"] == pytest.approx(2.0) and values["volume_change.p50"] == pytest.approx(0.1)
    assert values["volumes.hippocampi.change_percent"] == -9.5 and values["verdict.counterfactual.AD"] == 0.7
    assert values["classifier_sha256"] == "" and "verdict.raw.AD" not in values
    with pytest.raises(ValueError, match="differ in shape"):
        self_test.measure(**{**_args(saliency, change), "volume_change": change[:2]})


def _args(saliency, change):
    return {
        "saliency": saliency,
        "volume_change": change,
        "volumes": {},
        "input_verdict": {},
        "verdict": {},
        "raw_verdict": {},
        "source": None,
        "model_sha256": "m",
        "classifier_sha256": None,
    }


def test_a_reference_document_round_trips(tmp_path):
    measured = _measured_like_the_reference()
    document = self_test.reference_document(measured, 12.3, {"torch": "x"})
    path = tmp_path / "reference.json"
    path.write_text(json.dumps(document))
    assert self_test.compare(measured, self_test.read_reference(path)) == []
    path.write_text(json.dumps({"values": {}}))
    with pytest.raises(ValueError, match="not a ControlCG self-test reference"):
        self_test.read_reference(path)


# --- the module's self-test, run as Slicer runs it --------------------------------------------------------------------


def test_the_module_self_test_matches_the_references_and_fails_on_a_drifted_value(module, capsys):  # noqa: F811
    controlcg, _ = module
    test = controlcg.ControlCGTest("test_sample_numbers_match_the_reference")
    result = unittest.TestResult()
    started = time.monotonic()
    test.run(result)  # as slicer.testing.runUnitTest runs it
    seconds = time.monotonic() - started
    assert result.wasSuccessful(), "\n".join(text for _, text in result.errors + result.failures)
    assert not result.skipped and result.testsRun == 1
    measured = test.selfTestMeasured
    reference = self_test.read_reference()
    assert set(measured) == set(reference["values"])
    with capsys.disabled():
        print(f"\nthe module's self-test on the sample: {seconds:.1f} s (the run alone {test.selfTestSeconds:.1f} s)")

    # one reference value moved past its tolerance: the self-test's own assertion fails and names it
    drifted = copy.deepcopy(reference)
    drifted["values"][DRIFTED]["value"] += 2 * drifted["values"][DRIFTED]["tolerance"]
    with pytest.raises(AssertionError, match=rf"1 of {len(measured)} values differ[\s\S]*{re.escape(DRIFTED)}"):
        test.assertMatchesReference(measured, drifted)
    # and one measured value moved past it (the model drifted), the same
    with pytest.raises(AssertionError, match=re.escape("verdict.counterfactual.AD: measured")):
        shifted = measured["verdict.counterfactual.AD"] + 0.05
        test.assertMatchesReference({**measured, "verdict.counterfactual.AD": shifted}, reference)

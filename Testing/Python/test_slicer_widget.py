"""ControlCGWidget and ControlCGTest driven outside Slicer: the module's own code, with the stand-ins of
slicer_stubs.py -- every widget of Resources/UI/ControlCG.ui as a plain object, ctkPathLineEdit emitting its signals
as CTK does, field changes of the parameter node running its observers at once as Slicer's ModifiedEvent does.

What it proves: the model folder field round-trips what is typed and goes back to the embedded model when cleared;
a slider release during a run leaves no drag pending; the self-tests report "skipped" (never "passed") without the
model's packages; the package install runs before the wait cursor and without skip_packages; "Change from" lists the
classifier's verdict (named with its probability after a run), each class and unpaired; the verdicts carry what the
classifier is worth; a scan the classifier already gives the target class offers the other direction in one click;
the run's regional volume table is shown in the panel. What it cannot prove:
that Slicer's widgets behave like the stand-ins (their behaviour is quoted from CTK's and Slicer's source).
"""

from __future__ import annotations

import re
import sys
import types
import unittest
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_slicer_logic import _oblique_sample, module, panel_request  # noqa: E402, F401  (module: the fixture)


@pytest.fixture
def widget(module):  # noqa: F811
    controlcg, slicer = module
    w = controlcg.ControlCGWidget()
    w.setup()
    return controlcg, slicer, w


# --- the model folder field -------------------------------------------------------------------------------------------


def test_model_folder_field_keeps_what_is_typed_and_clearing_it_selects_the_embedded_model(widget):
    controlcg, _, w = widget
    field, p = w.ui.modelPathLineEdit, w._parameterNode
    assert field.currentPath == "" and p.modelPath == ""  # the embedded model shows as an empty field, not "."
    writes = field.writes
    field.type("/data/m")
    assert field.currentPath == "/data/m", "the panel rewrote the text while it was typed"
    assert field.writes == writes, "the panel wrote into the field while the user typed"
    assert p.modelPath == "/data/m" and panel_request(w.logic, p).model == "/data/m"

    field.clear_by_user()  # ctkPathLineEdit emits no currentPathChanged for an empty text, only validInputChanged
    assert p.modelPath == "", "clearing the field must select the embedded model again"
    assert panel_request(w.logic, p).model is None
    assert Path(w.logic.modelFolder(p)) == controlcg.EMBEDDED_MODEL


def test_model_folder_from_the_scene_reaches_the_field_once(widget):
    _, _, w = widget
    field, p = w.ui.modelPathLineEdit, w._parameterNode
    writes = field.writes
    p.modelPath = "/models/other"  # a scene load or a script
    assert field.currentPath == "/models/other" and field.writes == writes + 1
    p.modelPath = "."  # a pathlib.Path field's empty path, as scenes of versions with one hold
    assert field.currentPath == "" and panel_request(w.logic, p).model is None


# --- a release during a run -------------------------------------------------------------------------------------------


def test_release_during_a_run_leaves_no_drag_for_a_later_edit(widget, module):  # noqa: F811
    _, slicer, w = widget
    p = w._parameterNode
    p.inputVolume = _oblique_sample(slicer)
    p.counterfactualSequence = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSequenceNode", "earlier result")
    started = []
    w._startOrExplain = started.append
    w.logic.process = types.SimpleNamespace(poll=lambda: None)  # a run in progress

    w.onWChanging(3.0)
    w.onWReleased(3.0)  # released while busy: nothing starts, and the drag is over
    assert started == [] and not w._dragging
    w.logic.process = None
    w.onWReleased(5.0)  # valueChanged without a drag: a typed value, a script, a scene load
    assert started == [], "a spin-box edit after a busy release started a run nobody asked for"

    w.onWChanging(3.0)
    w.onWReleased(3.0)  # a real drag, not busy, w not computed: compute just this w
    assert started == [[3.0]]


# --- the self-tests without torch -------------------------------------------------------------------------------------


def test_self_tests_report_skipped_not_passed_without_the_model_packages(module, monkeypatch):  # noqa: F811
    controlcg, slicer = module
    monkeypatch.setattr(controlcg.ControlCGLogic, "missingPackages", staticmethod(lambda: ["torch", "monai"]))
    suite = unittest.TestLoader().loadTestsFromTestCase(controlcg.ControlCGTest)  # what runUnitTest does
    result = unittest.TestResult()
    suite.run(result)
    assert result.wasSuccessful(), result.errors + result.failures
    skipped = {test._testMethodName: reason for test, reason in result.skipped}
    assert set(skipped) == {
        "test_counterfactual_on_sample",
        "test_sample_numbers_match_the_reference",
        "test_cancel_leaves_scene_unchanged",
    }
    assert all("torch, monai" in reason for reason in skipped.values())
    assert result.testsRun == 4  # the geometry test ran and passed

    controlcg.ControlCGTest().runTest()  # the Reload and Test button: says what it skipped, raises nothing
    assert sum("skipped" in m for m in slicer.state["messages"]) == 3


# --- installing the packages ------------------------------------------------------------------------------------------


def test_packages_install_before_the_wait_cursor_without_skip_packages(widget, monkeypatch):
    controlcg, slicer, w = widget
    calls = []
    missing = [["monai"], []]  # before and after the install

    def pip_ensure(requirements, **kwargs):
        calls.append(("pip_ensure", slicer.state.get("wait_cursor", 0), kwargs))

    packaging = types.ModuleType("slicer.packaging")
    packaging.load_requirements = lambda path: [r for r in Path(path).read_text().splitlines() if r[:1].isalpha()]
    packaging.pip_ensure = pip_ensure
    packaging.pip_check = lambda requirement: True
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    monkeypatch.setattr(slicer, "packaging", packaging, raising=False)
    monkeypatch.setattr(controlcg.ControlCGLogic, "missingPackages", staticmethod(lambda: missing.pop(0)))
    monkeypatch.setattr(controlcg.ControlCGLogic, "checkTorchVersion", staticmethod(lambda: None))
    monkeypatch.setattr(controlcg.importlib.util, "find_spec", lambda name: object())  # torch is there
    w._parameterNode.inputVolume = _oblique_sample(slicer)
    w.logic.start = lambda *args, **kwargs: calls.append(("start", slicer.state.get("wait_cursor", 0), {}))

    w._startOrExplain([4.0])
    assert [(name, cursor) for name, cursor, _ in calls] == [("pip_ensure", 0), ("start", 1)], slicer.state.get(
        "dialogs"
    )
    kwargs = calls[0][2]
    assert "skip_packages" not in kwargs and kwargs["requester"] == "ControlCG"


def test_a_package_left_unmet_or_a_replaced_torch_is_reported(module):  # noqa: F811
    controlcg, _ = module
    logic = controlcg.ControlCGLogic
    with pytest.raises(RuntimeError, match="monai>=1.6"):
        logic.checkInstalled(["monai>=1.6"], {}, lambda requirement: False)
    torch = logic.installedVersions(["torch"])["torch"]
    with pytest.raises(RuntimeError, match=re.escape(f"torch changed from 0.0 to {torch}")):
        logic.checkInstalled([], {"torch": "0.0"}, lambda requirement: True)


# --- the class the change is measured from, and the other direction ---------------------------------------------------


def _sweep(target="CN", source="CN", choice="auto"):
    """What the parameter node keeps after a run on a scan the classifier calls CN (p 0.94) at w = 4."""
    from ControlCGLib import slicer_bridge as bridge

    return bridge.SweepResults(
        input="vtkMRMLScalarVolumeNode1",
        target=target,
        source=source,
        input_verdict={"CN": 0.94, "AD": 0.06},
        verdicts={"4": {"CN": 0.94, "AD": 0.06}},
        volumes={"4": {"hippocampi": {"input_ml": 9.59, "counterfactual_ml": 9.59, "change_percent": 0.0}}},
        source_choice=choice,
        classifier_note=bridge.classifier_note(bridge.EMBEDDED_CLASSIFIER_CALIBRATION.classifier_sha256),
    ).to_json()


def test_change_from_lists_the_verdict_the_classes_and_unpaired(widget):
    _, _, w = widget
    combo, p = w.ui.sourceComboBox, w._parameterNode
    assert combo.items == ["the classifier's verdict", "CN", "AD", "none (unpaired: the model's output minus the scan)"]
    assert combo.currentIndex == 0 and p.sourceClass == "auto"
    combo.currentIndex = 2
    assert p.sourceClass == "AD" and panel_request(w.logic, p).source == "AD"
    combo.currentIndex = 3
    assert p.sourceClass == "none" and panel_request(w.logic, p).source is None
    p.sourceClass = "CN"  # a scene that saved a choice: shown again when the model's classes are read
    w.onModelChanged()
    assert combo.currentText == "CN"


def test_the_verdict_is_shown_with_its_probability_and_what_it_is_worth(widget):
    _, slicer, w = widget
    p = w._parameterNode
    p.inputVolume = _oblique_sample(slicer)
    p.targetClass, p.w = "AD", 4.0
    p.results = _sweep(target="AD", source="CN")
    assert w.ui.sourceComboBox.items[0] == "the classifier's verdict: CN (p 0.94)"
    assert "CN is the classifier's verdict on the scan (p 0.94)" in w.ui.pairingLabel.text
    assert w.ui.classifierNoteLabel.text == (
        "classifier trained on simulated brains; calibration measured on 24 simulated held-out subjects: ECE 0.09; "
        "uncalibrated on real scans"
    )
    assert w.ui.volumesLabel.text.startswith("At w=4, toward AD")
    assert not w.ui.otherDirectionButton.visible  # the change was measured from another class: nothing to offer


def test_a_scan_already_of_the_target_class_offers_the_other_direction_in_one_click(widget):
    _, slicer, w = widget
    p = w._parameterNode
    p.inputVolume = _oblique_sample(slicer)
    p.targetClass, p.w = "CN", 4.0
    p.results = _sweep(target="CN", source="CN")  # the classifier already says CN
    button = w.ui.otherDirectionButton
    assert button.visible and button.enabled and button.text == "Explain toward AD instead"
    started = []
    w._startOrExplain = started.append
    button.emit("clicked(bool)", False)
    assert p.targetClass == "AD" and w.ui.targetClassComboBox.currentText == "AD" and started == [None]
    assert not button.visible  # the target is now the other class

    p.targetClass, p.results = "CN", _sweep(target="CN", source="CN", choice="CN")  # the user chose CN to start from
    assert not button.visible  # then the advice is another source, not another target


def test_the_run_table_is_shown_in_the_panel(widget):
    _, slicer, w = widget
    p = w._parameterNode
    table = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLTableNode", "volumes")
    sets = w.ui.volumesTableView.sets
    p.volumesTable = table
    assert w.ui.volumesTableView.table is table
    p.w = 2.0  # another change of the parameter node does not set the same table again
    assert w.ui.volumesTableView.sets == sets + 1

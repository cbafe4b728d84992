"""ControlCGLogic driven end to end outside Slicer: the module's own code, with stand-ins for the scene and for
Slicer 5.12's non-blocking launchConsoleProcess (slicer_stubs.py), running the real command line on an oblique volume.

What it proves: the Logic reads the volume through the (K, J, I) + IJK->RAS boundary, runs in the background with
progress, puts the results into the scene as four sequences (counterfactual, saliency, raw model output, volume
change) on the input's exact geometry with their attributes and the regional volumes as a table node, switches w
(images and table) without a new run, shows the overlay chosen, extends the sweep, and leaves the scene untouched on
cancel and on failure, removing its temporary folder every time. What it cannot prove: that Slicer itself behaves
like the stand-ins.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ControlCGLib import slicer_bridge as bridge
from ControlCGLib.resources import sample_scan

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import slicer_stubs  # noqa: E402


@pytest.fixture
def module(monkeypatch):
    saved = {k: sys.modules.get(k) for k in ("slicer", "qt", "ctk", "vtk")}
    for name in list(sys.modules):
        if name == "slicer" or name.startswith("slicer.") or name in ("qt", "ctk", "vtk"):
            monkeypatch.delitem(sys.modules, name, raising=False)
    slicer = slicer_stubs.install()
    spec = importlib.util.spec_from_file_location("ControlCG_under_test", ROOT / "ControlCG" / "ControlCG.py")
    controlcg = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(controlcg)
    yield controlcg, slicer
    for name in list(sys.modules):
        if name == "slicer" or name.startswith("slicer.") or name in ("qt", "ctk", "vtk"):
            del sys.modules[name]
    sys.modules.update({k: v for k, v in saved.items() if v is not None})


def _oblique_sample(slicer):
    """The sample's voxels on an oblique grid with a parent transform, as a loaded volume node."""
    from test_slicer_bridge import oblique_matrix

    array, geometry = bridge.array_from_image(sitk.ReadImage(str(sample_scan())))
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "patient T1")
    node.array = array.copy()
    node.ijk_to_ras = oblique_matrix(spacing=(2.0, 2.0, 2.0), degrees=(8.0, -5.0, 10.0), origin=geometry[:3, 3])
    node.SetAndObserveTransformNodeID("vtkMRMLLinearTransformNode7")
    return node


def _run(logic, p, scales, **kwargs):
    works = []
    original = bridge.WorkFolder.create

    def remember(*args):
        works.append(original(*args))
        return works[-1]

    bridge.WorkFolder.create = remember
    try:
        outcome, message = logic.runSync(p, scales, timeout=600, **kwargs)
    finally:
        bridge.WorkFolder.create = original
    assert works and not works[0].root.exists(), "the temporary folder is removed in every case"
    return outcome, message


def test_logic_runs_shows_switches_and_extends(module):
    controlcg, slicer = module
    logic = controlcg.ControlCGLogic()
    p = logic.getParameterNode()
    p.inputVolume = _oblique_sample(slicer)
    p.steps = 10
    before = p.inputVolume.array.copy()
    events = []
    outcome, message = _run(logic, p, [2.0, 4.0], onProgress=events.append)
    assert outcome == "done", message
    assert [e.index for e in events if e.stage == "sampling" and e.index] == [1, 2, 3]
    np.testing.assert_array_equal(p.inputVolume.array, before)  # the input is never modified
    launch = slicer.state["launches"][-1]
    assert launch["useStartupEnvironment"] is False and launch["blocking"] is False  # as executePythonModule does

    kinds = (
        (p.counterfactualSequence, "counterfactual"),
        (p.saliencySequence, "saliency"),
        (p.rawSequence, bridge.RAW_KIND),
        (p.volumeChangeSequence, bridge.VOLUME_CHANGE_KIND),
    )
    for sequence, kind in kinds:
        assert sequence.GetName() == f"patient T1 {kind} AD" and sequence.index_name == "w"
        assert [v for v, _ in sequence.items] == ["2", "4"]
        for value, node in sequence.items:
            np.testing.assert_array_equal(node.ijk_to_ras, p.inputVolume.ijk_to_ras)  # exact, via CopyOrientation
            assert node.array.shape == before.shape and node.array.dtype == np.float32
            assert node.GetName() == f"patient T1 {kind} AD w={value}"
            assert node.GetAttribute("ControlCG.w") == value and node.GetAttribute("ControlCG.Steps") == "10"
            assert len(node.GetAttribute("ControlCG.ModelSHA256")) == 64
            assert node.GetAttribute("ControlCG.CodeVersion") == controlcg.__version__
            assert node.GetAttribute("ControlCG.Kind") == kind
            assert "ECE 0.09" in node.GetAttribute("ControlCG.Classifier")  # what the verdicts are worth
    sweep = logic.sweepOf(p)
    assert sweep.computed == [2.0, 4.0] and set(sweep.input_verdict) == {"CN", "AD"}
    assert sweep.input == p.inputVolume.GetID() and bridge.SweepResults.from_json(p.results) == sweep
    # paired by default: the change is measured from the classifier's verdict on the input, and the raw output has
    # its own verdicts
    assert sweep.source == max(sweep.input_verdict, key=sweep.input_verdict.get)
    assert sweep.target == "AD" and set(sweep.raw_verdicts) == {"2", "4"}
    assert sweep.source_choice == "auto" and "uncalibrated on real scans" in sweep.classifier_note
    assert set(sweep.volumes) == {"2", "4"} and "hippocampi" in sweep.volumes_at(4.0)
    for (_, cf), (_, sal), (_, raw), (_, change) in zip(*(q.items for q, _ in kinds)):
        # the counterfactual shown is the patient's scan plus the change the overlay draws; the raw output is not
        np.testing.assert_allclose(cf.array, before + sal.array, atol=1e-3 * float(np.abs(before).max()))
        assert np.abs(raw.array - cf.array).max() > 0.01 * float(np.abs(before).max())
        assert cf.GetAttribute("ControlCG.Source") == sweep.source
        # the volume change: the log volume ratio, zero outside the brain, both signs inside
        assert change.array.min() < 0 < change.array.max() and np.isfinite(change.array).all()
        assert (change.array[sal.array == 0] == 0).mean() > 0.99
    assert p.rawSequence.items[1][1].GetAttribute("ControlCG.Verdict") == bridge.format_verdict(sweep.raw_verdict(4.0))

    browser = p.sequenceBrowser
    cf_proxy, sal_proxy = browser.GetProxyNode(p.counterfactualSequence), browser.GetProxyNode(p.saliencySequence)
    raw_proxy = browser.GetProxyNode(p.rawSequence)
    assert cf_proxy.GetTransformNodeID() == sal_proxy.GetTransformNodeID() == "vtkMRMLLinearTransformNode7"
    assert raw_proxy.GetTransformNodeID() == "vtkMRMLLinearTransformNode7" and browser.sequences[2] is p.rawSequence
    change_proxy = browser.GetProxyNode(p.volumeChangeSequence)
    assert browser.sequences[3] is p.volumeChangeSequence
    assert change_proxy.GetTransformNodeID() == "vtkMRMLLinearTransformNode7"
    assert browser.selected == 1 and cf_proxy.GetAttribute("ControlCG.w") == "4"  # p.w = 4 is shown
    layers = slicer.state["layers"]
    assert layers["background"] is cf_proxy and layers["foreground"] is sal_proxy
    assert layers["foregroundOpacity"] == p.overlayOpacity
    display = sal_proxy.GetDisplayNode()
    lo, hi = display.window
    assert lo == -hi and hi == pytest.approx(max(np.abs(n.array).max() for _, n in p.saliencySequence.items))
    table = slicer.mrmlScene.GetFirstNodeByName(controlcg.COLOR_TABLE_NAME)
    assert display.color_node_id == table.GetID() and len(table.colors) == 256
    alphas = np.array([c[3] for c in table.colors])
    assert alphas[128] == 0 and alphas[0] == alphas[-1] == 1  # transparent centre
    assert slicer.state["legends"][-1] is sal_proxy
    assert slicer.state["legend_titles"][sal_proxy.GetID()] == bridge.SALIENCY_LEGEND

    table = p.volumesTable  # the regional volumes at the w shown, one row per region
    assert table.GetName() == "patient T1 volumes AD w=4" and table.locked
    assert [table.GetColumnName(c) for c in range(table.GetNumberOfColumns())] == [
        name for name, _, _ in bridge.VOLUME_COLUMNS
    ]
    assert [tuple(c.values[r] for c in table.columns) for r in range(table.GetNumberOfRows())] == bridge.volume_rows(
        sweep.volumes_at(4.0)
    )
    assert table.properties[("Input (mL)", "unitLabel")] == "mL" and table.GetAttribute("ControlCG.w") == "4"

    assert logic.showW(p, 2.0) and browser.selected == 0 and cf_proxy.GetAttribute("ControlCG.w") == "2"
    assert table.GetAttribute("ControlCG.w") == "2" and table.GetName().endswith("w=2")  # the table follows w
    assert table.GetCellText(0, 3) == f"{bridge.volume_rows(sweep.volumes_at(2.0))[0][3]:.6g}"
    p.overlay = "volume change"  # the second overlay: its own colours, legend and fixed symmetric window
    logic.updateDisplay(p)
    assert slicer.state["layers"]["foreground"] is change_proxy and slicer.state["layers"]["background"] is cf_proxy
    assert change_proxy.GetDisplayNode().window == (-bridge.VOLUME_CHANGE_WINDOW, bridge.VOLUME_CHANGE_WINDOW)
    change_table = slicer.mrmlScene.GetFirstNodeByName(controlcg.VOLUME_CHANGE_COLOR_TABLE_NAME)
    assert change_proxy.GetDisplayNode().color_node_id == change_table.GetID() and change_table.colors[128][3] == 0
    assert change_table.colors[0][:3] != table_colour(slicer, controlcg.COLOR_TABLE_NAME, 0)  # not the saliency's
    assert slicer.state["legend_titles"][change_proxy.GetID()] == bridge.VOLUME_CHANGE_LEGEND
    p.overlay = "saliency"
    logic.updateDisplay(p)
    assert slicer.state["layers"]["foreground"] is sal_proxy
    assert not logic.showW(p, 3.0)  # not computed: the widget re-runs on release
    p.background = "raw model output"
    logic.updateDisplay(p)
    assert slicer.state["layers"]["background"] is raw_proxy and slicer.state["layers"]["foreground"] is sal_proxy
    assert raw_proxy.GetAttribute("ControlCG.w") == "2"  # browsed with the others
    p.background = "input scan"
    logic.updateDisplay(p)
    assert slicer.state["layers"]["background"] is p.inputVolume

    nodes = slicer.mrmlScene.GetNumberOfNodes()
    outcome, message = _run(logic, p, [3.0])
    assert outcome == "done", message
    assert [v for v, _ in p.counterfactualSequence.items] == ["2", "3", "4"]  # the same sequences, extended
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes
    assert browser.selected == 1  # the new w is shown
    extended = logic.sweepOf(p)
    assert extended.computed == [2.0, 3.0, 4.0] and extended.window >= sweep.window
    assert [v for v, _ in p.volumeChangeSequence.items] == ["2", "3", "4"] and p.volumesTable is table
    assert table.GetAttribute("ControlCG.w") == "3" and set(extended.volumes) == {"2", "3", "4"}


def table_colour(slicer, name, i):
    return slicer.mrmlScene.GetFirstNodeByName(name).colors[i][:3]


def test_cancel_and_failure_leave_the_scene_unchanged(module):
    controlcg, slicer = module
    logic = controlcg.ControlCGLogic()
    p = logic.getParameterNode()
    p.inputVolume = _oblique_sample(slicer)
    nodes = slicer.mrmlScene.GetNumberOfNodes()

    def cancel_at_first_step(progress):
        if progress.stage == "sampling" and progress.index >= 1:
            logic.cancel()

    outcome, _ = _run(logic, p, [4.0], onProgress=cancel_at_first_step)
    assert outcome == "cancelled" and not logic.busy
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes and p.counterfactualSequence is None

    p.targetClass = "MCI"  # the model knows CN and AD only
    outcome, message = _run(logic, p, [4.0])
    assert outcome == "failed" and "MCI" in message and "Traceback" not in message
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes


def test_logic_refuses_volumes_it_cannot_explain(module):
    controlcg, slicer = module
    logic = controlcg.ControlCGLogic()
    label = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "segmentation")
    label.array = np.ones((3, 3, 3), np.int16)
    with pytest.raises(ValueError, match="label map"):
        logic.arrayAndGeometry(label)
    empty = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(ValueError, match="holds no image"):
        logic.arrayAndGeometry(empty)
    rgb = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "photo")
    rgb.array, rgb.components = np.ones((3, 3, 3)), 3
    with pytest.raises(ValueError, match="not a scalar volume"):
        logic.arrayAndGeometry(rgb)


def test_model_folder_default_is_the_embedded_model(module):
    controlcg, _ = module
    logic = controlcg.ControlCGLogic()
    p = logic.getParameterNode()
    assert Path(logic.modelFolder(p)) == controlcg.EMBEDDED_MODEL
    assert panel_request(logic, p).model is None  # the child then also uses the embedded classifier
    p.modelPath = "/elsewhere/model"
    assert panel_request(logic, p).model == "/elsewhere/model"
    p.modelPath = "."  # what a pathlib.Path field holds for "empty", as scenes of versions with one hold
    assert panel_request(logic, p).model is None and logic.modelPathText(p) == ""


def panel_request(logic, p, scales=(4.0,)):
    """The request the Logic makes of the parameter node (a work folder's paths only: nothing is written)."""
    return logic.request(p, list(scales), bridge.WorkFolder(Path("work")))


def test_the_panel_request_is_the_command_lines_request(module, tmp_path):
    """What the panel launches parses back, with the real parser, to the request it made: its choices, the work
    folder's files, progress lines, no montage, and the sampling it does not choose left to the product."""
    from ControlCGLib.cli import build_parser
    from ControlCGLib.run_request import RunRequest

    controlcg, _ = module
    logic = controlcg.ControlCGLogic()
    p = logic.getParameterNode()
    p.targetClass, p.steps, p.seed, p.startStrength, p.device = "CN", 12, 7, 0.45, "cpu"
    p.preprocessed, p.acceptUnusualScan, p.modelPath = True, True, "/models/m"
    work = bridge.WorkFolder(tmp_path)
    request = logic.request(p, [0.0, 2.5], work)
    command = bridge.build_command("PythonSlicer", request)
    assert command[:3] == ["PythonSlicer", "-m", "ControlCGLib.cli"]
    assert RunRequest.from_args(build_parser().parse_args(command[3:]), str(work.input)) == request
    assert (request.input, request.out) == (str(work.input), str(work.output))
    assert (request.cancel_file, request.pid_file) == (str(work.cancel_flag), str(work.pid_file))
    assert request.progress_lines and not request.montage and request.threads == bridge.default_threads()
    assert (request.target, request.scales, request.steps, request.seed) == ("CN", (0.0, 2.5), 12, 7)
    assert (request.start_strength, request.device, request.model) == (0.45, "cpu", "/models/m")
    assert request.preprocessed and request.accept_unusual and request.source == "auto"
    p.sourceClass = "AD"  # "Change from": a class chosen by the user, or unpaired
    assert logic.request(p, [4.0], work).source == "AD"
    p.sourceClass = "none"
    unpaired = logic.request(p, [4.0], work)
    assert unpaired.source is None and "--source none" in " ".join(bridge.build_command("PythonSlicer", unpaired))
    assert logic.request(p, [4.0], work, precision="fp32").precision == "fp32"  # what the self-test pins
    assert request.sampling_changes() == {"steps": 12, "start_strength": 0.45}
    for unset in ("--solver", "--spacing", "--kv-stride", "--injection", "--blend", "--no-blend"):
        assert unset not in command


def test_an_unusual_scan_is_refused_in_words_or_accepted_with_a_warning(module):
    """The CLI's refusal of another contrast reaches the panel as its own sentence (no traceback); accepted on
    request, the run finishes and its nodes carry the warning."""
    from ControlCGLib.data.phantoms import contrast_scan

    controlcg, slicer = module
    logic = controlcg.ControlCGLogic()
    p = logic.getParameterNode()
    array, geometry = bridge.array_from_image(contrast_scan("T2"))
    node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "patient T2")
    node.array, node.ijk_to_ras = array, geometry
    p.inputVolume, p.steps = node, 4
    nodes = slicer.mrmlScene.GetNumberOfNodes()
    outcome, message = _run(logic, p, [4.0])
    assert outcome == "failed" and message.startswith("the tissue contrast looks like a T2-weighted scan")
    assert "Traceback" not in message and "--accept-unusual-scan" in message
    assert slicer.mrmlScene.GetNumberOfNodes() == nodes and p.counterfactualSequence is None

    p.acceptUnusualScan = True
    outcome, message = _run(logic, p, [4.0])
    assert outcome == "done", message
    assert len(logic.lastRecord.warnings) == 1 and "T2-weighted" in logic.lastRecord.warnings[0]
    for _, item in p.counterfactualSequence.items:
        assert "T2-weighted" in item.GetAttribute("ControlCG.ScanWarnings")


def test_quitting_slicer_mid_run_ends_the_child_and_removes_its_folder(module):
    """No completion callback comes once Slicer quits: the aboutToQuit() slot the Logic connects ends the child
    (the Python behind the launcher too) and removes the temporary folder."""
    import time

    controlcg, slicer = module
    logic = controlcg.ControlCGLogic()
    p = logic.getParameterNode()
    p.inputVolume = _oblique_sample(slicer)
    started = []
    logic.start(p, [4.0], onProgress=lambda e: started.append(e.stage == "sampling"))
    work, process = logic.work, logic.process
    assert [s for s, _ in slicer.state["app_connections"]] == ["aboutToQuit()"]
    deadline = time.monotonic() + 300
    while not any(started) and time.monotonic() < deadline:
        slicer.app.processEvents()
        time.sleep(0.02)
    assert any(started), "the child never reached sampling"
    assert work.root.exists()
    slicer_stubs.emit_app_signal("aboutToQuit()")
    assert process.poll() is not None, "the child still runs after Slicer quit"
    assert not work.root.exists(), "the temporary folder outlived Slicer"
    while logic.busy and time.monotonic() < deadline:  # (here the event loop goes on: the ended run completes)
        slicer.app.processEvents()
        time.sleep(0.02)
    assert not logic.busy
    logic.start(p, [4.0])  # a second run connects no second slot
    assert len(slicer.state["app_connections"]) == 1
    second = logic.work
    logic.onAboutToQuit()
    assert not second.root.exists() and logic.process.poll() is not None

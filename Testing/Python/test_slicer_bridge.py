"""The Slicer module's testable half (ControlCGLib.slicer_bridge): Slicer's (K, J, I) arrays and IJK->RAS matrices
to SimpleITK and back, the command line the module launches -- run for real, through a stand-in for Slicer's
PythonSlicer launcher, with its progress lines parsed -- cooperative cancel, the process-tree fallback, results."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from ControlCGLib import slicer_bridge as bridge
from ControlCGLib.defaults import EXIT_CANCELLED
from ControlCGLib.model.checkpoints import WEIGHTS, file_sha256
from ControlCGLib.overlay import diverging_rgba
from ControlCGLib.progress import format_progress, parse_progress
from ControlCGLib.resources import classifier_dir, diffusion_dir, sample_scan

ROOT = Path(__file__).resolve().parents[2]


def oblique_matrix(spacing=(0.9, 1.1, 2.5), degrees=(12.0, -7.0, 20.0), origin=(-30.0, 12.5, 40.0)) -> np.ndarray:
    """An IJK->RAS with three rotations and anisotropic spacing, as an oblique clinical acquisition has."""
    a, b, c = (math.radians(d) for d in degrees)
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    m = np.eye(4)
    m[:3, :3] = rz @ ry @ rx @ np.diag(spacing)
    m[:3, 3] = origin
    return m


# --- geometry ---------------------------------------------------------------------------------------------------------


def test_identity_volume_maps_ras_to_lps():
    """Voxel i=1 of an identity-geometry Slicer volume is at RAS (1, 0, 0), which ITK calls LPS (-1, 0, 0)."""
    image = bridge.image_from_array(np.zeros((2, 3, 4), np.float32), np.eye(4))
    assert image.GetSize() == (4, 3, 2)  # (I, J, K): the array's axes reversed
    assert image.TransformIndexToPhysicalPoint((1, 0, 0)) == pytest.approx((-1.0, 0.0, 0.0))
    assert image.TransformIndexToPhysicalPoint((0, 1, 0)) == pytest.approx((0.0, -1.0, 0.0))
    assert image.TransformIndexToPhysicalPoint((0, 0, 1)) == pytest.approx((0.0, 0.0, 1.0))


def test_oblique_geometry_and_kji_order_survive_the_round_trip():
    rng = np.random.default_rng(0)
    array = rng.normal(size=(5, 6, 7)).astype(np.float32)  # (K, J, I) as slicer.util.arrayFromVolume gives it
    m = oblique_matrix()
    image = bridge.image_from_array(array, m)
    for i, j, k in [(0, 0, 0), (6, 0, 0), (0, 5, 0), (0, 0, 4), (3, 2, 1)]:
        ras = m @ np.array([i, j, k, 1.0])
        lps = image.TransformIndexToPhysicalPoint((i, j, k))
        assert lps == pytest.approx((-ras[0], -ras[1], ras[2]), abs=1e-9)
        assert image.GetPixel(i, j, k) == array[k, j, i]
    back, matrix = bridge.array_from_image(image)
    np.testing.assert_array_equal(back, array)
    np.testing.assert_allclose(matrix, m, atol=1e-12)


def test_geometry_survives_the_file_the_child_reads(tmp_path):
    """The module hands the child a NIfTI file: its geometry comes back equal within the float32 of the header."""
    array = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6) + 1
    work = bridge.WorkFolder(tmp_path)
    bridge.write_input(array, oblique_matrix(), work)
    back, matrix = bridge.array_from_image(sitk.ReadImage(str(work.input)))
    np.testing.assert_array_equal(back, array)
    assert bridge.same_grid(back.shape, matrix, array.shape, oblique_matrix())
    assert not bridge.same_grid(back.shape, matrix, array.shape, oblique_matrix(origin=(-30, 12.5, 40.01)))


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((4, 4), np.float32), "3D scalar volume"),
        (np.zeros((2, 3, 4, 3), np.float32), "3D scalar volume"),
        (np.full((3, 3, 3), np.nan, np.float32), "NaN"),
        (np.ones((3, 3, 3), np.float32), "constant"),
        (np.ones((3, 3, 3), np.complex64), "real numbers"),
    ],
)
def test_inputs_the_model_cannot_explain_are_refused_before_a_process_starts(tmp_path, array, message):
    work = bridge.WorkFolder(tmp_path)
    with pytest.raises(ValueError, match=message):
        bridge.write_input(array, np.eye(4), work)
    assert not work.input.exists()


def test_singular_geometry_is_refused():
    m = np.eye(4)
    m[2, 2] = 0.0
    with pytest.raises(ValueError, match="singular"):
        bridge.image_from_array(np.zeros((2, 2, 2)), m)


# --- small decisions --------------------------------------------------------------------------------------------------


def test_sweep_parsing():
    assert bridge.parse_sweep("0 2, 4 6", 3.5) == [0.0, 2.0, 3.5, 4.0, 6.0]
    assert bridge.parse_sweep("4", 4.0) == [4.0]
    with pytest.raises(ValueError, match="'x' is not a number"):
        bridge.parse_sweep("0 x")
    with pytest.raises(ValueError, match="outside the slider's range"):
        bridge.parse_sweep("0 12")
    with pytest.raises(ValueError, match="at least one"):
        bridge.parse_sweep(" ")


def test_slider_matches_only_computed_values():
    assert bridge.nearest_computed(4.0, [0.0, 2.0, 4.0]) == 4.0
    assert bridge.nearest_computed(4.5, [0.0, 2.0, 4.0]) is None


def test_verdict_and_names():
    assert bridge.format_verdict({"CN": 0.031, "AD": 0.969}) == "AD 0.97 · CN 0.03"
    assert bridge.format_verdict({}) == "-"
    assert bridge.node_name("T1", "saliency", "AD", 4.0) == "T1 saliency AD w=4"
    assert bridge.node_name("T1", "counterfactual", "CN") == "T1 counterfactual CN"


def test_model_class_names_are_read_without_torch():
    assert bridge.model_class_names(diffusion_dir()) == ["CN", "AD"]
    with pytest.raises(ValueError, match="holds a ClassifierConfig, not a ControlCG diffusion model"):
        bridge.model_class_names(classifier_dir())
    with pytest.raises(ValueError, match="not a ControlCG model folder"):
        bridge.model_class_names(ROOT)


def _results(target="AD", source="CN", by_w=None) -> bridge.RunResults:
    """Run results as read_results returns them, from a record and small saliency arrays."""
    from ControlCGLib.outputs import RunRecord

    by_w = by_w or {4.0: 0.5}
    record = RunRecord(
        input="t1.nii.gz",
        target=target,
        model="m",
        model_sha256="ab" * 32,
        class_names=["CN", "AD"],
        settings={"source": source},
        input_verdict={"CN": 0.9, "AD": 0.1},
        verdicts={f"{w:g}": {"CN": 0.2, "AD": 0.8} for w in by_w},
        raw_verdicts={f"{w:g}": {"CN": 0.3, "AD": 0.7} for w in by_w} if source else {},
    )
    results = {}
    for w, peak in by_w.items():
        saliency = np.zeros((2, 2, 2), np.float32)
        saliency[0, 0, 0] = -peak
        raw_verdict = record.raw_verdicts.get(f"{w:g}", {})
        results[w] = bridge.WResult(w, saliency, saliency, np.eye(4), record.verdict(w), saliency, raw_verdict)
    return bridge.RunResults(record, results)


def test_the_sweep_the_panel_keeps_extends_and_survives_the_scene_file():
    sweep = bridge.SweepResults.of_run("vtkMRMLScalarVolumeNode1", _results(by_w={4.0: 0.5}))
    assert (sweep.target, sweep.source, sweep.computed, sweep.window) == ("AD", "CN", [4.0], 0.5)
    assert sweep.verdict(4.0) == {"CN": 0.2, "AD": 0.8} and sweep.raw_verdict(4.0) == {"CN": 0.3, "AD": 0.7}
    assert sweep.verdict(2.0) == {} and sweep.raw_verdict(2.0) == {}
    more = _results(by_w={2.5: 0.8})
    assert sweep.continues("vtkMRMLScalarVolumeNode1", more)
    assert not sweep.continues("vtkMRMLScalarVolumeNode2", more)  # another volume: new sequences
    assert not sweep.continues("vtkMRMLScalarVolumeNode1", _results(target="CN", source="AD"))
    assert not sweep.continues("vtkMRMLScalarVolumeNode1", _results(source=None))  # unpaired: another pairing
    extended = sweep.extended(more)
    assert extended.computed == [2.5, 4.0] and extended.window == pytest.approx(0.8)
    assert sweep.extended(_results(by_w={6.0: 0.1})).window == 0.5  # one window for every w: the widest
    assert bridge.SweepResults.from_json(extended.to_json()) == extended
    unpaired = bridge.SweepResults.of_run("n", _results(source=None))
    assert unpaired.source is None and unpaired.raw_verdicts == {}
    assert bridge.SweepResults.from_json(unpaired.to_json()) == unpaired


def test_a_sweep_from_another_version_reads_or_is_left_out():
    """Unknown keys are left out (a scene that stored the run's settings too); what cannot be read shows nothing."""
    stored = {"input": "n", "target": "AD", "source": None, "verdicts": {"4": {}}, "settings": {}, "window": 2.0}
    sweep = bridge.SweepResults.from_json(json.dumps(stored))
    assert sweep.computed == [4.0] and sweep.window == 2.0 and sweep.raw_verdicts == {}
    for text in ("", "{not json", "[1, 2]", json.dumps({"verdicts": {}})):
        assert bridge.SweepResults.from_json(text) is None


def test_progress_protocol_round_trip():
    line = format_progress("mapping back", 0, 0)
    assert parse_progress(line).stage == "mapping back"
    p = parse_progress(format_progress("sampling", 3, 12))
    assert (p.index, p.total) == (3, 12) and 0.1 < p.fraction < 0.9
    assert parse_progress("sampling: 25%|##  | 3/12") is None  # a tqdm bar is not a progress event
    assert parse_progress("controlcg-progress stage=x step=a/b") is None


def test_error_message_prefers_the_childs_own_words():
    lines = ["controlcg-progress stage=preparing step=0/0", "error: the input contains NaN values"]
    assert bridge.error_message(lines, 2) == "the input contains NaN values"
    assert "code 1" in bridge.error_message(["Traceback ...", "KeyError: 'x'"], 1)
    traceback = [
        "Traceback (most recent call last):",
        '  File "/x/monai/networks/nets/diffusion_model_unet.py", line 1700, in forward',
        "    h = self.conv_in(x)",
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
        "[W1128 warnings after the error]",
    ]
    message = bridge.error_message(traceback, 1)  # what the panel's dialog shows: the error, never the frames
    assert (
        message
        == "the computation stopped with code 1: torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    )


# --- the real command line, launched the way Slicer launches it -------------------------------------------------------

LAUNCHER = """
import subprocess, sys
# Stand-in for Slicer's PythonSlicer: a launcher process whose child is the Python that computes.
sys.exit(subprocess.call([sys.executable, *sys.argv[1:]]))
"""


@pytest.fixture(scope="module")
def slicer_like_input(tmp_path_factory):
    """The bundled sample's voxels as Slicer holds them, (K, J, I), on an oblique grid (an acquisition tilted in all
    three planes) so that any axis-order or RAS/LPS slip would move or mirror the result."""
    array, sample_geometry = bridge.array_from_image(sitk.ReadImage(str(sample_scan())))
    assert len(set(array.shape)) == 3, "a non-cubic volume, so that a swapped axis order would show"
    ijk_to_ras = oblique_matrix(spacing=(2.0, 2.0, 2.0), degrees=(8.0, -5.0, 10.0), origin=sample_geometry[:3, 3])
    return array, ijk_to_ras


def _launch(tmp_path: Path, work: bridge.WorkFolder, **choices) -> subprocess.Popen:
    launcher = tmp_path / "PythonSlicer.py"
    launcher.write_text(LAUNCHER)
    command = bridge.build_command(sys.executable, bridge.request_for(work, **choices))
    command = [sys.executable, str(launcher), *command[1:]]  # "PythonSlicer" -m ControlCGLib.cli ...
    env = {**os.environ, **bridge.child_environment(ROOT, ROOT / "Resources")}
    return subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_module_command_runs_reports_progress_and_returns_results_on_the_input_grid(tmp_path, slicer_like_input):
    array, ijk_to_ras = slicer_like_input
    work = bridge.WorkFolder.create(tmp_path)
    bridge.write_input(array, ijk_to_ras, work)
    process = _launch(tmp_path, work, target="AD", scales=(0.0, 4.0), steps=10, seed=3, threads=2)
    lines = [line.rstrip() for line in process.stdout]
    assert process.wait(timeout=300) == 0, "\n".join(lines)
    events = [p for p in map(parse_progress, lines) if p is not None]
    stages = [e.stage for e in events]
    assert stages[0] == "preparing" and stages[-1] == "done"
    steps = [e.index for e in events if e.stage == "sampling" and e.index]
    assert steps == [1, 2, 3]  # 10 steps started at 30 %: one line per step, in order
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0

    results = bridge.read_results(work.output)
    assert sorted(results.by_w) == [0.0, 4.0]
    assert results.record.settings["seed"] == 3
    for r in results.by_w.values():
        assert bridge.same_grid(r.counterfactual.shape, r.ijk_to_ras, array.shape, ijk_to_ras)
        brain = array > np.percentile(array, 60)
        corr = np.corrcoef(r.counterfactual[brain], array[brain])[0, 1]
        assert corr > 0.8, "the counterfactual is the same anatomy in the same (K, J, I) order"
        assert np.abs(r.saliency).max() > 0
        assert set(r.verdict) == {"CN", "AD"}
        # the model's raw output, on the same grid, with its own verdict (a paired run: the default)
        assert r.raw is not None and r.raw.shape == r.counterfactual.shape and set(r.raw_verdict) == {"CN", "AD"}
        # the deformation's volume change on the same grid, and the regional volumes ready for a table
        assert r.volume_change is not None and r.volume_change.shape == r.counterfactual.shape
        assert {"hippocampi", "ventricles", "brain"} <= set(r.volumes)
        assert all(v["input_ml"] > 0 for v in r.volumes.values())
        # the warped scan has no intensity the scan does not have
        assert array.min() <= r.counterfactual.min() and r.counterfactual.max() <= array.max()
    input_verdict = results.record.input_verdict
    assert results.record.source == max(input_verdict, key=input_verdict.get)
    assert results.attributes(4.0, bridge.RAW_KIND)["ControlCG.Verdict"] == bridge.format_verdict(
        results.by_w[4.0].raw_verdict
    )
    attributes = results.attributes(4.0, "saliency")
    assert attributes["ControlCG.w"] == "4" and attributes["ControlCG.Steps"] == "10"
    assert attributes["ControlCG.Seed"] == "3" and len(attributes["ControlCG.ModelSHA256"]) == 64
    assert attributes["ControlCG.CodeVersion"]
    work.remove()
    assert not work.root.exists()


def test_cancel_flag_stops_the_real_command_within_one_step_and_writes_nothing(tmp_path, slicer_like_input):
    array, ijk_to_ras = slicer_like_input
    work = bridge.WorkFolder.create(tmp_path)
    bridge.write_input(array, ijk_to_ras, work)
    process = _launch(tmp_path, work, target="AD", scales=(4.0,), steps=50, threads=2)  # 15 steps
    cancelled_at = None
    last_step = 0
    for line in process.stdout:
        event = parse_progress(line)
        if event and event.stage == "sampling" and event.index:
            last_step = event.index
            if cancelled_at is None:
                work.request_cancel()
                cancelled_at = event.index
    assert process.wait(timeout=120) == EXIT_CANCELLED
    assert cancelled_at == 1 and last_step <= cancelled_at + 1, "stopped within one step of the request"
    assert not work.output.exists(), "a cancelled run leaves no output folder"
    assert work.input.exists()  # the module removes the whole work folder itself
    work.remove()
    assert not work.root.exists()


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads process states from /proc")
def test_process_tree_fallback_ends_the_computing_child_behind_the_launcher(tmp_path):
    """A worker that ignores the cancel flag: killing the launcher alone would leave it running."""
    pid_file = tmp_path / "worker.pid"
    stubborn = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(300)"
    launcher = tmp_path / "PythonSlicer.py"
    launcher.write_text(LAUNCHER)
    process = subprocess.Popen([sys.executable, str(launcher), "-c", stubborn])
    deadline = time.monotonic() + 30
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.05)
    worker = int(pid_file.read_text())
    assert worker != process.pid and _alive(worker)
    bridge.end_process_tree(process, pid_file)
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker) and process.poll() is not None


def test_read_results_refuses_a_folder_without_a_result(tmp_path):
    with pytest.raises(ValueError, match="no readable result.json"):
        bridge.read_results(tmp_path)


def test_version_comparison_for_the_torch_floor():
    assert bridge.version_at_least("2.13.0+cpu", "2.8")
    assert bridge.version_at_least("2.8.0", "2.8")
    assert not bridge.version_at_least("2.7.1+cu118", "2.8")
    assert bridge.version_at_least("2.10.0rc1", "2.8")


def test_pairing_is_worded_for_the_panel():
    assert bridge.format_pairing("CN", "AD").startswith("paired: AD minus CN")
    assert bridge.format_pairing(None, "AD").startswith("unpaired")
    assert "the change is zero" in bridge.format_pairing("AD", "AD")
    assert bridge.format_pairing("CN", "AD", {"CN": 0.94, "AD": 0.06}).endswith(
        "; CN is the classifier's verdict on the scan (p 0.94)"
    )
    assert bridge.format_pairing("CN", "AD", {"CN": 0.94}, source_choice="CN").endswith(
        "CN chosen as the class to change from"
    )


# --- the class the change is measured from, what the verdicts are worth, the volumes ----------------------------------


def test_change_from_choices_and_the_other_direction():
    assert bridge.source_choices(["CN", "AD"]) == [
        ("auto", "the classifier's verdict"),
        ("CN", "CN"),
        ("AD", "AD"),
        ("none", "none (unpaired: the model's output minus the scan)"),
    ]
    assert [bridge.source_argument(v) for v in ("auto", "CN", "none")] == ["auto", "CN", None]
    assert bridge.verdict_choice_text({"CN": 0.94, "AD": 0.06}) == "the classifier's verdict: CN (p 0.94)"
    assert bridge.verdict_choice_text({}) == "the classifier's verdict"
    verdict = {"CN": 0.94, "AD": 0.06}
    assert bridge.other_direction("CN", "CN", "auto", verdict) == "AD"  # already CN: offer AD
    assert bridge.other_direction("AD", "CN", "auto", verdict) is None  # a real change toward AD
    assert bridge.other_direction("CN", "CN", "CN", verdict) is None  # the user chose to start from CN
    assert bridge.other_direction("CN", None, "none", verdict) is None  # unpaired
    three = {"CN": 0.5, "MCI": 0.3, "AD": 0.2}
    assert bridge.other_direction("CN", "CN", "auto", three) == "MCI"  # the most probable other class


def test_the_embedded_classifiers_calibration_is_the_measured_one():
    """The number every verdict is labelled with is the evaluation's measurement of these very weights."""
    summary = json.loads((ROOT / "docs" / "evaluation" / "summary.json").read_text())["classifier_calibration"]
    c = bridge.EMBEDDED_CLASSIFIER_CALIBRATION
    assert c.ece == round(summary["ece"], 3) and c.subjects == summary["n"]
    assert c.classifier_sha256 == file_sha256(classifier_dir() / WEIGHTS), (
        "the embedded classifier changed: measure its calibration (docs/evaluation) before labelling verdicts with it"
    )
    assert (ROOT / c.source).is_file()
    note = bridge.classifier_note(c.classifier_sha256)
    assert note == (
        "classifier trained on simulated brains; calibration measured on 24 simulated held-out subjects: ECE 0.09; "
        "uncalibrated on real scans"
    )
    assert "not known to ControlCG; uncalibrated" in bridge.classifier_note("ab" * 32)
    assert "ECE" not in bridge.classifier_note("ab" * 32)  # never a number that was not measured
    assert bridge.classifier_note(None) == "no classifier"


def test_volume_rows_and_the_volume_change_colours():
    volumes = {
        "hippocampi": {"input_ml": 9.587, "counterfactual_ml": 8.722, "change_percent": -9.023},
        "ventricles": {"input_ml": 19.382, "counterfactual_ml": 24.113, "change_percent": 24.413},
    }
    assert bridge.volume_rows(volumes) == [("hippocampi", 9.59, 8.72, -9.0), ("ventricles", 19.38, 24.11, 24.4)]
    assert [name for name, _, _ in bridge.VOLUME_COLUMNS] == [
        "Region",
        "Input (mL)",
        "Counterfactual (mL)",
        "Change (%)",
    ]
    rows = bridge.volume_change_rgba(256, 0.2)
    assert rows.shape == (256, 4) and rows[128, 3] == 0 and rows[0, 3] == rows[-1, 3] == 1
    assert rows[0, 2] > rows[0, 0] and rows[-1, 0] > rows[-1, 2]  # shrinks purple (blue > red), grows orange
    assert not np.allclose(rows[:, :3], diverging_rgba(256, 0.2)[:, :3])  # never read as the saliency's colours
    assert bridge.VOLUME_CHANGE_WINDOW == pytest.approx(math.log(2.0))


def test_the_sweep_keeps_volumes_the_source_choice_and_the_classifier_note():
    results = _results(by_w={4.0: 0.5})
    results.by_w[4.0].volumes = {"hippocampi": {"input_ml": 9.5, "counterfactual_ml": 8.6, "change_percent": -9.5}}
    sweep = bridge.SweepResults.of_run("n", results, "CN")
    assert sweep.source_choice == "CN" and sweep.volumes_at(4.0)["hippocampi"]["change_percent"] == -9.5
    assert sweep.classifier_note == "no classifier" and sweep.volumes_at(2.0) == {}
    more = _results(by_w={2.0: 0.1})
    more.by_w[2.0].volumes = {"hippocampi": {"input_ml": 9.5, "counterfactual_ml": 9.0, "change_percent": -5.3}}
    assert set(sweep.extended(more).volumes) == {"2", "4"}
    assert bridge.SweepResults.from_json(sweep.extended(more).to_json()) == sweep.extended(more)
    assert "Classifier" in {k.removeprefix("ControlCG.") for k in results.attributes(4.0, "saliency")}

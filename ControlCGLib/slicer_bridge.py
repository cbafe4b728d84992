"""Everything the Slicer module does that is not Qt or MRML plumbing, testable without Slicer.

The module (ControlCG/ControlCG.py) hands this file a volume as Slicer holds it -- a numpy array in (K, J, I) order
plus its 4x4 IJK->RAS matrix -- and gets back the same for every result. Between the two sits the library's own
command line, run in a child process on temporary files: :func:`request_for` makes the run's
:class:`~ControlCGLib.run_request.RunRequest` (the command line's own request type) and :func:`build_command` its
command, :func:`~ControlCGLib.progress.parse_progress` reads its progress lines, :func:`read_results` reads what it
wrote, :func:`end_process_tree` is the fallback when a cooperative cancel is not obeyed. :class:`SweepResults` is
what the panel keeps of the runs in its sequences.

Imports numpy, SimpleITK (both ship with Slicer) and torch-free parts of the library, never torch: the panel must
open before torch exists.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import defaults
from .imaging.geometry import array_and_ijk_to_ras, image_from_array
from .model.config import ModelConfig, read_model_config
from .outputs import RunRecord, read_result_folder
from .overlay import PUOR, diverging_rgba, symmetric_window
from .progress import parse_progress
from .run_request import RunRequest

ATTRIBUTE_PREFIX = "ControlCG."


# --- geometry: Slicer's (array, IJK->RAS) <-> SimpleITK image; geometry.py holds the conversion --------------------


def array_from_image(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """``(array in K, J, I order as float32, IJK->RAS)``: what ``slicer.util.updateVolumeFromArray`` takes."""
    array, ijk_to_ras = array_and_ijk_to_ras(image)
    return array.astype(np.float32, copy=False), ijk_to_ras


def same_grid(shape_a, ijk_to_ras_a, shape_b, ijk_to_ras_b, tolerance: float = 1e-4) -> bool:
    """Whether two volumes share a grid (shape and IJK->RAS, within ``tolerance`` mm or per direction cosine)."""
    return tuple(shape_a) == tuple(shape_b) and np.allclose(ijk_to_ras_a, ijk_to_ras_b, atol=tolerance, rtol=0)


# --- the child process -----------------------------------------------------------------------------------------------


@dataclass
class WorkFolder:
    """A private temporary folder per run: the input written for the child, its output, the cancel and pid files."""

    root: Path
    input: Path = field(init=False)
    output: Path = field(init=False)
    cancel_flag: Path = field(init=False)
    pid_file: Path = field(init=False)

    def __post_init__(self):
        self.root = Path(self.root)
        self.input = self.root / "input.nii.gz"
        self.output = self.root / "output"
        self.cancel_flag = self.root / "cancel.flag"
        self.pid_file = self.root / "worker.pid"

    @classmethod
    def create(cls, parent: str | os.PathLike | None = None) -> WorkFolder:
        return cls(Path(tempfile.mkdtemp(prefix="ControlCG-", dir=parent)))

    def request_cancel(self) -> None:
        self.cancel_flag.write_text("cancel\n")

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def write_input(array: np.ndarray, ijk_to_ras: np.ndarray, work: WorkFolder) -> Path:
    """Write the volume for the child; refuses what the model cannot mean anything for before a process starts."""
    a = np.asarray(array)
    if a.ndim != 3:
        raise ValueError(f"the input must be a 3D scalar volume; this one has shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number) or np.issubdtype(a.dtype, np.complexfloating):
        raise ValueError(f"the input must hold real numbers, not {a.dtype}")
    if not np.isfinite(a).all():
        raise ValueError("the input volume contains NaN or infinite voxels")
    if float(a.max()) == float(a.min()):
        raise ValueError("the input volume is constant (empty): there is no anatomy to explain")
    sitk.WriteImage(image_from_array(a.astype(np.float32, copy=False), ijk_to_ras), str(work.input), True)
    return work.input


def default_threads() -> int:
    """All but one of this machine's cores: the GUI keeps one."""
    return max(1, (os.cpu_count() or 2) - 1)


def request_for(work: WorkFolder, **choices) -> RunRequest:
    """The run of the panel's ``choices`` (RunRequest fields) on ``work``: its input, output, cancel and pid files,
    progress as parseable lines, no montage (the panel shows the volumes themselves), ``default_threads()`` unless
    chosen. The sampling settings the panel does not choose stay unset: the product's."""
    fixed = {
        "input": str(work.input),
        "out": str(work.output),
        "cancel_file": str(work.cancel_flag),
        "pid_file": str(work.pid_file),
        "progress_lines": True,
        "montage": False,
    }
    return RunRequest(**{"threads": default_threads(), **choices, **fixed})


def build_command(python: str, request: RunRequest) -> list[str]:
    """The argument list that runs ``controlcg`` on ``request`` (no shell involved)."""
    return [python, "-m", "ControlCGLib.cli", *request.to_argv()]


def child_environment(library_root: str | os.PathLike, resources: str | os.PathLike) -> dict[str, str]:
    """Variables the child needs: where ControlCGLib and the Resources are, and unbuffered output."""
    path = os.environ.get("PYTHONPATH", "")
    root = str(library_root)
    return {
        "PYTHONPATH": root + (os.pathsep + path if path else ""),
        "CONTROLCG_RESOURCES": str(resources),
        "PYTHONUNBUFFERED": "1",
    }


def error_message(lines: list[str], return_code: int) -> str:
    """The child's own explanation of a failure: its ``error:`` line, else the last lines of its output."""
    for line in reversed(lines):
        if line.startswith("error: "):
            return line.removeprefix("error: ")
    said = [line.strip() for line in lines if line.strip() and parse_progress(line) is None]
    errors = [line for line in said if re.match(r"^[\w.]*(Error|Exception|Interrupt)\b", line)]
    last = errors[-1] if errors else (said[-1] if said else "")  # a traceback's last line, never its frames
    return f"the computation stopped with code {return_code}" + (f": {last}" if last else "")


def end_process_tree(process: subprocess.Popen, pid_file: str | os.PathLike | None, wait: float = 5.0) -> None:
    """Stop the worker for good: the Python that computes (its id from ``pid_file``; Slicer's ``PythonSlicer`` is a
    launcher with that Python as its child) and the launched process itself. psutil ends whole trees when present."""
    pids = []
    try:
        pids.append(int(Path(pid_file).read_text().strip()))
    except (OSError, ValueError, TypeError):
        pass
    try:
        import psutil  # not bundled with Slicer; monai[psutil] brings it

        try:
            pids += [c.pid for c in psutil.Process(process.pid).children(recursive=True)]
        except psutil.Error:
            pass
    except ImportError:
        pass
    for pid in dict.fromkeys(pids):
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, signal.SIGTERM if sys.platform == "win32" else signal.SIGKILL)
        except OSError:
            pass  # already gone
    if process.poll() is None:
        process.kill()
    deadline = time.monotonic() + wait
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)


# --- results ---------------------------------------------------------------------------------------------------------


@dataclass
class WResult:
    w: float
    counterfactual: np.ndarray  # (K, J, I) on the input's grid: the scan + the change (what the panel shows)
    saliency: np.ndarray  # the change itself: the paired change of a paired run
    ijk_to_ras: np.ndarray
    verdict: dict[str, float]  # the classifier on ``counterfactual``
    raw: np.ndarray | None = None  # the model's own output, resampled onto the input's grid
    raw_verdict: dict[str, float] = field(default_factory=dict)  # the classifier on ``raw`` (paired runs only)
    volume_change: np.ndarray | None = None  # log of the local volume ratio cf / input (a deformation run)
    volumes: dict[str, dict[str, float]] = field(default_factory=dict)  # region -> input_ml, counterfactual_ml, %


@dataclass
class RunResults:
    """A finished run: its result.json (target, pairing, verdicts, scan warnings) and its volumes per w."""

    record: RunRecord
    by_w: dict[float, WResult]

    def attributes(self, w: float, kind: str) -> dict[str, str]:
        """Node attributes recording how a result was made (model checksum, w, steps, seed, code version...)."""
        record, settings = self.record, self.record.settings
        sampling = settings.get("sampling", {})
        result = self.by_w.get(w)
        verdict = {} if result is None else (result.raw_verdict if kind == RAW_KIND else result.verdict)
        return {
            ATTRIBUTE_PREFIX + k: str(v)
            for k, v in {
                "Kind": kind,
                "Target": record.target,
                "Source": record.source or "none (unpaired)",
                "w": defaults.w_key(w),
                "Steps": sampling.get("steps", ""),
                "StartStrength": sampling.get("start_strength", ""),
                "Seed": settings.get("seed", ""),
                "Device": settings.get("device", ""),
                "Model": record.model,
                "ModelSHA256": record.model_sha256,
                "ClassifierSHA256": record.classifier_sha256 or "",
                "CodeVersion": settings.get("code_version", ""),
                "Verdict": format_verdict(verdict) if verdict else "",
                "Classifier": classifier_note(record.classifier_sha256),
                "ScanWarnings": " | ".join(record.warnings),
            }.items()
        }


RAW_KIND = "raw model output"  # the Kind attribute (and node name part) of the model's own output
VOLUME_CHANGE_KIND = "volume change"  # the same, of the log volume-change map (a deformation run)


def read_results(output: str | os.PathLike) -> RunResults:
    """Read what the child wrote (outputs.py's result folder) into arrays on the input's grid: per w the shown
    counterfactual (scan + change), the change (saliency) and the model's raw output (``counterfactual_resampled``)."""
    record, images = read_result_folder(output)
    by_w = {}
    for w, by_kind in images.items():
        cf_array, geometry = array_from_image(by_kind["counterfactual"])
        arrays = {}
        for kind in ("saliency", "counterfactual_resampled", "volume_change"):
            if kind not in by_kind:  # the volume change: a deformation run only
                continue
            arrays[kind], other_geometry = array_from_image(by_kind[kind])
            if not same_grid(cf_array.shape, geometry, arrays[kind].shape, other_geometry):
                raise ValueError(f"w={defaults.w_key(w)}: the counterfactual and its {kind} are on different grids")
        raw_verdict = record.raw_verdicts.get(defaults.w_key(w), {})
        by_w[w] = WResult(
            w,
            cf_array,
            arrays["saliency"],
            geometry,
            record.verdict(w),
            arrays["counterfactual_resampled"],
            raw_verdict,
            arrays.get("volume_change"),
            record.volumes.get(defaults.w_key(w), {}),
        )
    return RunResults(record, by_w)


# --- small decisions the panel makes ---------------------------------------------------------------------------------


def parse_sweep(text: str, current: float | None = None) -> list[float]:
    """The w values one run computes: the sweep field (numbers separated by spaces or commas) plus the slider's w."""
    values = []
    for token in text.replace(",", " ").split():
        try:
            values.append(float(token))
        except ValueError:
            raise ValueError(f"w sweep: {token!r} is not a number (write e.g. '0 2 4 6 8 10')") from None
    if current is not None:
        values.append(float(current))
    lo, hi = defaults.W.range
    bad = [v for v in values if not lo <= v <= hi]
    if bad:
        raise ValueError(f"w sweep: {bad[0]:g} is outside the slider's range {lo:g} to {hi:g}")
    if not values:
        raise ValueError("w sweep: give at least one w value")
    return sorted(set(values))


def version_at_least(version: str, minimum: str) -> bool:
    """'2.13.0+cpu' >= '2.8': numeric release parts compared, local and pre-release suffixes ignored."""

    def release(v: str) -> tuple[int, ...]:
        parts = []
        for piece in v.split("+")[0].split("."):
            digits = "".join(c for c in piece if c.isdigit()) if piece[:1].isdigit() else ""
            if not digits:
                break
            parts.append(int(digits))
        return tuple(parts)

    return release(version) >= release(minimum)


def nearest_computed(w: float, computed, tolerance: float = 1e-6) -> float | None:
    """The computed w the slider's value stands for, or None when it needs a new run."""
    for v in computed:
        if abs(v - w) <= tolerance:
            return v
    return None


def format_verdict(verdict: dict[str, float]) -> str:
    """'AD 0.97 · CN 0.03': most probable class first."""
    if not verdict:
        return "-"
    return " · ".join(f"{name} {p:.2f}" for name, p in sorted(verdict.items(), key=lambda kv: -kv[1]))


def format_pairing(
    source: str | None, target: str, input_verdict: dict[str, float] | None = None, source_choice: str = "auto"
) -> str:
    """What the saliency of a run is the change of, in the panel's words; ``source_choice`` is what the panel asked
    for (``"auto"``: the classifier's verdict, then shown with its probability)."""
    if source is None:
        return f"unpaired: the model's output toward {target} minus the scan"
    if source == target:
        return (
            f"{source} (the classifier's verdict or the chosen source) is the target itself: the change is zero and "
            "the counterfactual is the scan; the raw model output shows what the model made"
        )
    text = f"paired: {target} minus {source}, from the same noise, added to the scan"
    if source_choice == SOURCE_AUTO and input_verdict and source in input_verdict:
        text += f"; {source} is the classifier's verdict on the scan (p {input_verdict[source]:.2f})"
    elif source_choice == source:
        text += f"; {source} chosen as the class to change from"
    return text


# --- the class the change is measured from -------------------------------------------------------------------------

SOURCE_AUTO = "auto"  # the classifier's verdict on the input (the command line's --source auto)
SOURCE_NONE = "none"  # unpaired: the model's output minus the scan (--source none)


def source_choices(class_names) -> list[tuple[str, str]]:
    """The panel's "Change from" choices, (value, text): the classifier's verdict, each class, unpaired."""
    return [
        (SOURCE_AUTO, "the classifier's verdict"),
        *((name, name) for name in class_names),
        (SOURCE_NONE, "none (unpaired: the model's output minus the scan)"),
    ]


def source_argument(choice: str) -> str | None:
    """The RunRequest ``source`` of a panel choice (None: unpaired)."""
    return None if choice == SOURCE_NONE else choice


def verdict_choice_text(input_verdict: dict[str, float]) -> str:
    """The "Change from" combo box's first entry once the classifier has spoken: its verdict with its probability."""
    if not input_verdict:
        return "the classifier's verdict"
    name, p = max(input_verdict.items(), key=lambda kv: kv[1])
    return f"the classifier's verdict: {name} (p {p:.2f})"


def other_direction(target: str, source: str | None, source_choice: str, input_verdict: dict[str, float]):
    """The class to explain toward instead when the classifier already gives the scan the target class (a run whose
    source was the classifier's verdict and came out as the target itself): the most probable other class. None
    when there is nothing to offer (the change was measured from another class, or the user chose the source)."""
    if source is None or source != target or source_choice != SOURCE_AUTO:
        return None
    others = {name: p for name, p in input_verdict.items() if name != target}
    return max(others, key=others.get) if others else None


# --- what the classifier's verdicts are worth ------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """How the verdicts of one classifier (its weights' SHA-256) were measured."""

    classifier_sha256: str
    trained_on: str
    measured_on: str
    subjects: int
    ece: float  # expected calibration error (confidence bins against accuracy)
    source: str  # where the measurement is recorded


#: The embedded classifier (Resources/Models/controlcg-cpu/classifier), measured by the evaluation:
#: docs/evaluation/summary.json "classifier_calibration" (test_slicer_bridge.py checks that the two agree and that
#: these are the embedded weights).
EMBEDDED_CLASSIFIER_CALIBRATION = Calibration(
    classifier_sha256="76c73bef06814c7399ba261ca6fa7f74321154e89f1a180aa9d914fb47acb4c8",
    trained_on="simulated brains",
    measured_on="simulated held-out subjects",
    subjects=24,
    ece=0.091,
    source="docs/evaluation/summary.json",
)
CALIBRATIONS = {c.classifier_sha256: c for c in (EMBEDDED_CLASSIFIER_CALIBRATION,)}


def classifier_note(classifier_sha256: str | None) -> str:
    """What every verdict of a run is labelled with: what its classifier was trained on and its measured
    calibration (never a number that was not measured)."""
    if not classifier_sha256:
        return "no classifier"
    c = CALIBRATIONS.get(classifier_sha256)
    if c is None:
        return (
            f"classifier {classifier_sha256[:12]} (not the embedded one): its training data and calibration are not "
            "known to ControlCG; uncalibrated"
        )
    return (
        f"classifier trained on {c.trained_on}; calibration measured on {c.subjects} {c.measured_on}: "
        f"ECE {c.ece:.2f}; uncalibrated on real scans"
    )


# --- regional volumes and the volume-change map -----------------------------------------------------------------------

#: The regional volume table's columns: (name, unit, description). One row per region of result.json's volumes.
VOLUME_COLUMNS = (
    ("Region", "", "atlas region (ICBM 2009a), scaled to this head by the registration"),
    ("Input (mL)", "mL", "the region's volume in the input scan"),
    ("Counterfactual (mL)", "mL", "the region pulled through the counterfactual's deformation"),
    ("Change (%)", "%", "counterfactual / input - 1"),
)


def volume_rows(volumes: dict[str, dict[str, float]]) -> list[tuple[str, float, float, float]]:
    """The table's rows, in result.json's region order: region, input mL, counterfactual mL (2 decimals), change %
    (1 decimal)."""
    return [
        (region, round(v["input_ml"], 2), round(v["counterfactual_ml"], 2), round(v["change_percent"], 1))
        for region, v in volumes.items()
    ]


#: Half-width of the volume-change overlay's window, the same for every w and every scan: a log volume ratio of
#: log(2), a local volume halved or doubled, takes the end colours.
VOLUME_CHANGE_WINDOW = math.log(2.0)
SALIENCY_LEGEND = "change: counterfactual - scan (red brighter, blue darker)"
VOLUME_CHANGE_LEGEND = "log local volume ratio (purple shrinks, orange grows)"


def volume_change_rgba(n: int = 256, transparent_fraction: float = 0.05) -> np.ndarray:
    """``(n, 4)`` RGBA rows in [0, 1] for log volume ratios from -window to +window: purple shrinks, orange grows;
    entries within ``transparent_fraction`` of the half-width around 0 are transparent (alpha 0), as the saliency
    table's are."""
    return diverging_rgba(n, transparent_fraction, PUOR)


def node_name(input_name: str, kind: str, target: str, w: float | None = None) -> str:
    """Names of the result nodes: the input's name, what it is, the class and (for single volumes) w."""
    suffix = f" w={w:g}" if w is not None else ""
    return f"{input_name} {kind} {target}{suffix}"


def model_class_names(model_folder: str | os.PathLike) -> list[str]:
    """The classes a diffusion model folder can move toward (its config.json, read without torch), for the panel."""
    config, _ = read_model_config(model_folder)
    if not isinstance(config, ModelConfig):
        kind = type(config).__name__
        raise ValueError(f"{model_folder} holds a {kind}, not a ControlCG diffusion model (ModelConfig)")
    return list(config.class_names)


# --- what the panel keeps of its runs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepResults:
    """What the panel shows beside the volumes of its sequences: whose run, the verdicts per w, the saliency window.
    Saved with the scene as JSON in the parameter node (the wrapper stores a string), so a reopened scene shows it."""

    input: str  # the input volume node's ID: a run on another volume starts new sequences
    target: str
    source: str | None  # the class the change is measured from; None: unpaired
    input_verdict: dict[str, float] = field(default_factory=dict)
    verdicts: dict[str, dict[str, float]] = field(default_factory=dict)  # w_key -> class -> probability, every w
    raw_verdicts: dict[str, dict[str, float]] = field(default_factory=dict)  # the same, of the raw model output
    window: float = 1.0  # half-width of the saliency window shared by every w: the same colour, the same change
    # w_key -> region -> input_ml, counterfactual_ml, change_percent (a deformation run; empty otherwise)
    volumes: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    source_choice: str = SOURCE_AUTO  # what the panel asked the change to be measured from (source_choices)
    classifier_note: str = ""  # what the verdicts are worth (classifier_note)

    @classmethod
    def of_run(cls, input_id: str, results: RunResults, source_choice: str = SOURCE_AUTO) -> SweepResults:
        record = results.record
        return cls(
            input_id,
            record.target,
            record.source,
            window=0.0,
            source_choice=source_choice,
            classifier_note=classifier_note(record.classifier_sha256),
        ).extended(results)

    def continues(self, input_id: str, results: RunResults) -> bool:
        """Whether ``results`` add w values to this sweep (same input, class and pairing) rather than start one."""
        record = results.record
        return (self.input, self.target, self.source) == (input_id, record.target, record.source)

    def extended(self, results: RunResults) -> SweepResults:
        """This sweep with ``results``' w values added; the window widens to the largest change of all of them."""
        by_w = results.by_w.items()
        return dataclasses.replace(
            self,
            input_verdict=results.record.input_verdict,
            verdicts={**self.verdicts, **{defaults.w_key(w): r.verdict for w, r in by_w}},
            raw_verdicts={**self.raw_verdicts, **{defaults.w_key(w): r.raw_verdict for w, r in by_w if r.raw_verdict}},
            window=max(self.window, symmetric_window(r.saliency for _, r in by_w)),
            volumes={**self.volumes, **{defaults.w_key(w): r.volumes for w, r in by_w if r.volumes}},
        )

    @property
    def computed(self) -> list[float]:
        return sorted(float(k) for k in self.verdicts)

    def verdict(self, w: float) -> dict[str, float]:
        return self.verdicts.get(defaults.w_key(w), {})

    def raw_verdict(self, w: float) -> dict[str, float]:
        return self.raw_verdicts.get(defaults.w_key(w), {})

    def volumes_at(self, w: float) -> dict[str, dict[str, float]]:
        return self.volumes.get(defaults.w_key(w), {})

    def pairing(self) -> str:
        return format_pairing(self.source, self.target, self.input_verdict, self.source_choice)

    def other_direction(self) -> str | None:
        return other_direction(self.target, self.source, self.source_choice, self.input_verdict)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SweepResults | None:
        """None for an empty or unreadable text (a scene of another version): no results shown, the next run
        starts new sequences. Keys this class does not have are left out."""
        try:
            data = json.loads(text)
            names = {f.name for f in dataclasses.fields(cls)}
            return cls(**{k: v for k, v in data.items() if k in names})
        except (ValueError, TypeError, AttributeError):
            return None

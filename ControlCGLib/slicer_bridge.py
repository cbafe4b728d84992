"""Everything the Slicer module does that is not Qt or MRML plumbing, testable without Slicer.

The module (ControlCG/ControlCG.py) hands this file a volume as Slicer holds it -- a numpy array in (K, J, I) order
plus its 4x4 IJK->RAS matrix -- and gets back the same for every result. Between the two sits the library's own
command line, run in a child process on temporary files: :func:`build_command` writes that command,
:func:`~ControlCGLib.progress.parse_progress` reads its progress lines, :func:`read_results` reads what it wrote,
:func:`end_process_tree` is the fallback when a cooperative cancel is not obeyed.

Imports numpy and SimpleITK only (both ship with Slicer), never torch: the panel must open before torch exists.
"""

from __future__ import annotations

import json
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
from .defaults import EXIT_CANCELLED  # noqa: F401  (re-exported: the module reads the child's exit code with it)
from .hashing import file_sha256 as sha256  # noqa: F401  (re-exported for the module)
from .imaging.geometry import array_and_ijk_to_ras, image_from_array  # noqa: F401  (image_from_array re-exported)
from .outputs import RunRecord, read_result_folder
from .progress import parse_progress  # noqa: F401  (re-exported: the module reads progress lines through here)

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


@dataclass(frozen=True)
class RunRequest:
    """What the panel asks for; turned into one command line by :func:`build_command`."""

    target: str
    scales: tuple[float, ...]
    steps: int = int(defaults.STEPS.default)
    seed: int = int(defaults.SEED.default)
    start_strength: float = defaults.START_STRENGTH.default
    device: str = defaults.DEVICE
    model: str = ""  # empty: the embedded model and its classifier
    preprocessed: bool = False
    accept_unusual: bool = False  # explain a scan the checks think is not a whole-brain T1 (warned, recorded)
    threads: int = 0  # 0: all but one of this machine's cores (the GUI keeps one)


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
    return max(1, (os.cpu_count() or 2) - 1)


def build_command(python: str, work: WorkFolder, request: RunRequest) -> list[str]:
    """The argument list that runs ``controlcg counterfactual`` on the work folder's input (no shell involved)."""
    scales = [float(w) for w in request.scales]
    if not scales:
        raise ValueError("no w value to compute")
    command = [
        python,
        "-m",
        "ControlCGLib.cli",
        "counterfactual",
        str(work.input),
        "--out",
        str(work.output),
        "--target",
        request.target,
        "--w",
        *[defaults.w_key(w) for w in scales],
        "--steps",
        str(int(request.steps)),
        "--seed",
        str(int(request.seed)),
        "--start-strength",
        f"{float(request.start_strength):g}",
        "--device",
        request.device,
        "--threads",
        str(request.threads or default_threads()),
        "--progress",
        "lines",
        "--no-montage",
        "--cancel-file",
        str(work.cancel_flag),
        "--pid-file",
        str(work.pid_file),
    ]
    if request.model:
        command += ["--model", str(request.model)]
    if request.preprocessed:
        command.append("--preprocessed")
    if request.accept_unusual:
        command.append("--accept-unusual-scan")
    return command


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


@dataclass
class RunResults:
    record: RunRecord
    by_w: dict[float, WResult]

    @property
    def input_verdict(self) -> dict[str, float]:
        return self.record.input_verdict

    @property
    def warnings(self) -> list[str]:
        """What the scan checks found and the user accepted (empty for a scan that passed them)."""
        return self.record.warnings

    @property
    def source(self) -> str | None:
        """The class the change is measured from (a paired run), or None (unpaired: the model's own output)."""
        return self.record.settings.get("source")

    def attributes(self, w: float, kind: str) -> dict[str, str]:
        """Node attributes recording how a result was made (model checksum, w, steps, seed, code version...)."""
        settings = self.record.settings
        sampling = settings.get("sampling", {})
        result = self.by_w.get(w)
        verdict = {} if result is None else (result.raw_verdict if kind == RAW_KIND else result.verdict)
        return {
            ATTRIBUTE_PREFIX + k: str(v)
            for k, v in {
                "Kind": kind,
                "Target": self.record.target,
                "Source": self.source or "none (unpaired)",
                "w": defaults.w_key(w),
                "Steps": sampling.get("steps", ""),
                "StartStrength": sampling.get("start_strength", ""),
                "Seed": settings.get("seed", ""),
                "Device": settings.get("device", ""),
                "Model": self.record.model,
                "ModelSHA256": self.record.model_sha256,
                "ClassifierSHA256": self.record.classifier_sha256 or "",
                "CodeVersion": settings.get("code_version", ""),
                "Verdict": format_verdict(verdict) if verdict else "",
                "ScanWarnings": " | ".join(self.warnings),
            }.items()
        }


RAW_KIND = "raw model output"  # the Kind attribute (and node name part) of the model's own output


def read_results(output: str | os.PathLike) -> RunResults:
    """Read what the child wrote (outputs.py's result folder) into arrays on the input's grid: per w the shown
    counterfactual (scan + change), the change (saliency) and the model's raw output (``counterfactual_resampled``)."""
    record, images = read_result_folder(output)
    by_w = {}
    for w, by_kind in images.items():
        cf_array, geometry = array_from_image(by_kind["counterfactual"])
        arrays = {}
        for kind in ("saliency", "counterfactual_resampled"):
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


def format_pairing(source: str | None, target: str) -> str:
    """What the saliency of a run is the change of, in the panel's words."""
    if source is None:
        return f"unpaired: the model's output toward {target} minus the scan"
    if source == target:
        return (
            f"{source} (the classifier's verdict or the chosen source) is the target itself: the change is zero and "
            "the counterfactual is the scan; the raw model output shows what the model made"
        )
    return f"paired: {target} minus {source}, from the same noise, added to the scan"


def node_name(input_name: str, kind: str, target: str, w: float | None = None) -> str:
    """Names of the result nodes: the input's name, what it is, the class and (for single volumes) w."""
    suffix = f" w={w:g}" if w is not None else ""
    return f"{input_name} {kind} {target}{suffix}"


@dataclass(frozen=True)
class ModelInfo:
    class_names: list[str]
    default_w: float


def model_info(model_folder: str | os.PathLike) -> ModelInfo:
    """A diffusion model folder's class names and default w (from config.json, without torch) for the panel."""
    path = Path(model_folder) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the model's configuration {path}: {exc}") from None
    if not isinstance(config, dict) or config.get("kind") != "ModelConfig":
        kind = config.get("kind") if isinstance(config, dict) else type(config).__name__
        raise ValueError(f"{path} describes {kind!r}, not a ControlCG diffusion model (ModelConfig)")
    names = config.get("class_names")
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path} names no classes")
    default_w = (config.get("provenance") or {}).get("default_w", defaults.W.default)
    return ModelInfo(list(names), float(default_w))

"""The numbers the Slicer module's self-test checks: what the bundled sample gives with a fixed seed, compared with
reference values stored in the repository (``self_test_reference.json`` beside this file) within stated tolerances.

The module's ControlCGTest runs the sample through its Logic (in Slicer, or in CI with the stand-ins of
Testing/Python/slicer_stubs.py), takes the results back out of the scene and calls :func:`measure` and
:func:`compare`; every value out of its tolerance is reported by name. The run is :data:`RUN`: one w, the product's
default sampling, the CPU in float32 (bfloat16 is chosen by the hardware and would make the numbers depend on the
machine).

Regenerate the references after a deliberate change (model, sampling, preprocessing), from the repository root:

    python -m ControlCGLib.self_test --write-reference

It runs the sample exactly as the module does (the volume as Slicer holds it, written by slicer_bridge, the module's
command line in a child process), measures, and writes the file with the tolerances of :data:`TOLERANCES`. Without
``--write-reference`` it compares a fresh run with the stored references.

numpy and the torch-free parts of the library only (the module imports this inside Slicer).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import __version__, defaults

REFERENCE_FILE = Path(__file__).with_name("self_test_reference.json")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SelfTestRun:
    """What the self-test computes: the sample toward ``target`` at one ``w``, from the classifier's verdict."""

    target: str = "AD"
    w: float = defaults.W.default
    seed: int = int(defaults.SEED.default)
    source: str = "auto"
    device: str = "cpu"
    precision: str = "fp32"
    steps: int = int(defaults.STEPS.default)  # the product's default sampling, as the panel passes it
    start_strength: float = defaults.START_STRENGTH.default


RUN = SelfTestRun()
PERCENTILES = (1, 50, 99)

#: Tolerance of each measured value, by the first matching name pattern: (prefix, suffix, absolute, relative);
#: a value passes when |measured - reference| <= absolute + relative * |reference|. Texts (the source class, the
#: model checksums) must be equal. Measured on the sample: two threads instead of one change every value by less
#: than a thousandth of its tolerance, bfloat16 instead of float32 stays within every tolerance, and seed 1 instead
#: of 0 leaves 7 values outside (the counterfactual's verdict, the hippocampal and ventricular volumes, the volume
#: change's 1st percentile).
TOLERANCES: tuple[tuple[str, str, float, float], ...] = (
    ("verdict.", "", 0.03, 0.0),  # probabilities
    ("volumes.", ".change_percent", 0.5, 0.0),  # percentage points
    ("volumes.", "_ml", 0.0, 0.005),
    ("saliency.", "", 0.5, 0.01),  # intensity units of the scan
    ("volume_change.", "", 0.002, 0.01),  # log volume ratio
    ("brain_voxels", "", 0.0, 0.005),
)


def tolerance(name: str, reference: float) -> float:
    for prefix, suffix, absolute, relative in TOLERANCES:
        if name.startswith(prefix) and name.endswith(suffix):
            return absolute + relative * abs(float(reference))
    raise KeyError(f"no tolerance is stated for {name!r}")


# --- measuring ----------------------------------------------------------------------------------------------------


def map_statistics(name: str, array: np.ndarray, brain: np.ndarray) -> dict[str, float]:
    """Mean, mean |value| and percentiles of a map inside the brain."""
    values = np.asarray(array, dtype=np.float64)[brain]
    if not values.size:
        raise ValueError(f"{name}: no voxel inside the brain")
    out = {f"{name}.mean": float(values.mean()), f"{name}.mean_abs": float(np.abs(values).mean())}
    for q, v in zip(PERCENTILES, np.percentile(values, PERCENTILES)):
        out[f"{name}.p{q:02d}"] = float(v)
    return out


def measure(
    *,
    saliency: np.ndarray,
    volume_change: np.ndarray,
    volumes: dict[str, dict[str, float]],
    input_verdict: dict[str, float],
    verdict: dict[str, float],
    raw_verdict: dict[str, float],
    source: str | None,
    model_sha256: str,
    classifier_sha256: str | None,
) -> dict[str, float | str]:
    """The self-test's values, by name, from one w's results as the module holds them. Inside the brain = where
    either map is non-zero (the run sets both to zero outside the brain mask it computed)."""
    saliency, volume_change = np.asarray(saliency), np.asarray(volume_change)
    if saliency.shape != volume_change.shape:
        raise ValueError(f"the saliency {saliency.shape} and the volume change {volume_change.shape} differ in shape")
    brain = (saliency != 0) | (volume_change != 0)
    values: dict[str, float | str] = {
        "model_sha256": model_sha256,
        "classifier_sha256": classifier_sha256 or "",
        "source": source or "none",
        "brain_voxels": float(brain.sum()),
    }
    for kind, probabilities in (("input", input_verdict), ("counterfactual", verdict), ("raw", raw_verdict)):
        for name, p in probabilities.items():
            values[f"verdict.{kind}.{name}"] = float(p)
    for region, v in volumes.items():
        for key in ("input_ml", "counterfactual_ml", "change_percent"):
            values[f"volumes.{region}.{key}"] = float(v[key])
    values |= map_statistics("saliency", saliency, brain)
    values |= map_statistics("volume_change", volume_change, brain)
    return values


def measure_results(results, w: float = RUN.w) -> dict[str, float | str]:
    """:func:`measure` of a slicer_bridge.RunResults at ``w`` (what the module's Logic reads back)."""
    r, record = results.by_w[float(w)], results.record
    if r.volume_change is None:
        raise ValueError("the run wrote no volume change (an intensity-change run): the self-test needs a deformation")
    return measure(
        saliency=r.saliency,
        volume_change=r.volume_change,
        volumes=r.volumes,
        input_verdict=record.input_verdict,
        verdict=r.verdict,
        raw_verdict=r.raw_verdict,
        source=record.source,
        model_sha256=record.model_sha256,
        classifier_sha256=record.classifier_sha256,
    )


# --- comparing ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mismatch:
    """One value that is not what the reference says."""

    name: str
    measured: float | str | None
    reference: float | str | None
    tolerance: float | None = None

    def __str__(self) -> str:
        if self.measured is None:
            return f"{self.name}: in the reference ({self.reference}), not measured"
        if self.reference is None:
            return f"{self.name}: measured ({self.measured}), not in the reference"
        if self.tolerance is None:
            return f"{self.name}: measured {self.measured!r}, reference {self.reference!r}"
        off = float(self.measured) - float(self.reference)
        return (
            f"{self.name}: measured {float(self.measured):.6g}, reference {float(self.reference):.6g} "
            f"± {self.tolerance:.3g} (off by {off:+.3g})"
        )


def compare(measured: dict[str, float | str], reference: dict) -> list[Mismatch]:
    """Every value of ``measured`` out of the reference's tolerance, missing from it or not measured, by name."""
    stored = reference["values"]
    problems = []
    for name in sorted(set(stored) | set(measured)):
        if name not in measured:
            problems.append(Mismatch(name, None, stored[name]["value"]))
            continue
        if name not in stored:
            problems.append(Mismatch(name, measured[name], None))
            continue
        expected, got = stored[name]["value"], measured[name]
        if isinstance(expected, str) or isinstance(got, str):
            if got != expected:
                problems.append(Mismatch(name, got, expected))
            continue
        allowed = float(stored[name]["tolerance"])
        if not abs(float(got) - float(expected)) <= allowed:  # NaN fails too
            problems.append(Mismatch(name, got, expected, allowed))
    return problems


def read_reference(path: str | os.PathLike = REFERENCE_FILE) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the self-test references {path}: {exc}") from None
    if data.get("format_version") != FORMAT_VERSION or not isinstance(data.get("values"), dict):
        raise ValueError(f"{path} is not a ControlCG self-test reference (format {FORMAT_VERSION})")
    return data


def reference_document(measured: dict[str, float | str], seconds: float, versions: dict[str, str]) -> dict:
    """The reference file's content: the run, where it was measured, and every value with its tolerance."""
    values = {}
    for name, value in sorted(measured.items()):
        if isinstance(value, str):
            values[name] = {"value": value}
        else:
            values[name] = {"value": round(float(value), 6), "tolerance": round(tolerance(name, value), 6)}
    return {
        "format_version": FORMAT_VERSION,
        "about": (
            "Reference values of the Slicer module's self-test (ControlCGTest): the bundled sample through the "
            "module's command line; regenerate with `python -m ControlCGLib.self_test --write-reference`."
        ),
        "run": {"input": "Resources/Sample/sample_T1.nii.gz", **vars(RUN)},
        "measured_with": {**versions, "seconds": round(seconds, 1)},
        "tolerances": (
            "a value passes when |measured - reference| <= tolerance; texts must be equal. Inside the brain = "
            "where the saliency or the volume change is non-zero."
        ),
        "values": values,
    }


# --- running the sample as the module does ------------------------------------------------------------------------


def run_sample(python: str = sys.executable, threads: int | None = None):
    """The sample through the module's own path outside Slicer: the volume as Slicer holds it ((K, J, I) + IJK->RAS),
    written by slicer_bridge, the module's command line in a child process, the results read back. Returns
    (slicer_bridge.RunResults, seconds)."""
    import SimpleITK as sitk

    from . import slicer_bridge as bridge
    from .resources import resources_dir, sample_scan

    array, ijk_to_ras = bridge.array_from_image(sitk.ReadImage(str(sample_scan())))
    work = bridge.WorkFolder.create()
    try:
        request = bridge.request_for(
            work,
            target=RUN.target,
            scales=(RUN.w,),
            seed=RUN.seed,
            source=RUN.source,
            device=RUN.device,
            precision=RUN.precision,
            steps=RUN.steps,
            start_strength=RUN.start_strength,
            **({"threads": threads} if threads else {}),
        )
        bridge.write_input(array, ijk_to_ras, work)
        library_root = Path(__file__).resolve().parents[1]
        env = {**os.environ, **bridge.child_environment(library_root, resources_dir())}
        started = time.monotonic()
        done = subprocess.run(bridge.build_command(python, request), env=env, capture_output=True, text=True)
        seconds = time.monotonic() - started
        if done.returncode != 0:
            lines = (done.stdout + done.stderr).splitlines()
            raise RuntimeError(bridge.error_message(lines, done.returncode))
        return bridge.read_results(work.output), seconds
    finally:
        work.remove()


def versions() -> dict[str, str]:
    import SimpleITK as sitk

    out = {"code_version": __version__, "python": platform.python_version(), "numpy": np.__version__}
    out["SimpleITK"] = sitk.Version_VersionString()
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:
        pass
    out["machine"] = platform.machine()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ControlCGLib.self_test",
        description="Run the Slicer module's self-test sample and compare it with, or write, the reference values.",
    )
    parser.add_argument("--write-reference", action="store_true", help=f"write {REFERENCE_FILE.name} from this run")
    parser.add_argument("--reference", type=Path, default=REFERENCE_FILE, help="the reference file")
    parser.add_argument("--threads", type=int, help="threads of the run (default: all cores but one)")
    args = parser.parse_args(argv)
    results, seconds = run_sample(threads=args.threads)
    measured = measure_results(results)
    if args.write_reference:
        document = reference_document(measured, seconds, versions())
        args.reference.write_text(json.dumps(document, indent=1) + "\n")
        print(f"wrote {args.reference} ({len(measured)} values, run {seconds:.0f} s)")
        return 0
    problems = compare(measured, read_reference(args.reference))
    for problem in problems:
        print(problem)
    print(f"{len(measured)} values, {len(problems)} out of tolerance (run {seconds:.0f} s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

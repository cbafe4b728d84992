"""The main job, end to end: a T1 in any geometry -> counterfactuals toward a class, back on its own grid.

One function serves the command line and Slicer's background process: prepare the scan
(imaging/native_space.py), run the one sampling loop (sampling/sampler.py) for every requested w, bring each
counterfactual back (detail and resampled), and ask the classifier, when one is given, what it thinks of the input
and of each counterfactual.

The product's counterfactual is *paired* (our departure from the paper, measured in docs/evaluation/report.md): the
target's and the source class's trajectories run from the same noise, and the change the class alone makes is what
turns one into the other. Shown as a *deformation* (``change="deformation"``, the product's: imaging/deformation.py),
the counterfactual is the patient's own scan warped by the smooth map that turns the source-class output into the
target-class output, with its local volume change and regional volumes; shown as an *intensity* change
(``change="intensity"``) it is the scan plus the difference of the two outputs. Toward the scan's own class the change
is zero and the counterfactual is the scan. ``source="auto"`` takes the source from the classifier's verdict on the
input; ``source=None`` is the paper's unpaired output (the change from the scan to the model output)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from . import __version__
from .defaults import CHANGE, CHANGES
from .imaging.deformation import Warp, estimate_warp
from .imaging.intensity import from_model_range, to_model_range
from .imaging.native_space import NativeResult, Prepared, prepare
from .model.classifier import VolumeClassifier, grid_factors
from .model.config import to_dict
from .progress import Cancelled, StepCallback, StopCallback
from .sampling.sampler import counterfactual
from .sampling.settings import SamplingConfig


@dataclass
class CounterfactualRun:
    prepared: Prepared
    model_grid: dict[float, np.ndarray]  # counterfactual shown, per w on the model grid, in [0, 1]
    native: dict[float, NativeResult]  # per w, on the input's own grid
    input_verdict: dict[str, float] = field(default_factory=dict)  # class -> probability (empty: no classifier)
    verdicts: dict[float, dict[str, float]] = field(default_factory=dict)  # per w: class -> probability
    settings: dict[str, Any] = field(default_factory=dict)
    raw: dict[float, np.ndarray] = field(default_factory=dict)  # the model's own output per w (model grid, [0, 1])
    raw_verdicts: dict[float, dict[str, float]] = field(default_factory=dict)
    source: str | None = None  # the class the change is measured from (None: unpaired)
    change: str = "deformation"  # how the change is shown (CHANGES)
    warps: dict[float, Warp] = field(default_factory=dict)  # per w, of a deformation run
    volumes: dict[float, dict[str, Any]] = field(default_factory=dict)  # per w: region -> regions.RegionVolumes

    def shown_change(self, w: float) -> np.ndarray:
        """The change shown at ``w`` on the model grid, in [0, 1] units (shown counterfactual - input); a paired
        run's model-range change is ``Counterfactuals.paired_change``."""
        return self.model_grid[float(w)] - self.prepared.model_input


AUTO = "auto"
DEFORMATION, INTENSITY = CHANGES


def model_output(x: torch.Tensor, mask: np.ndarray, intensity) -> np.ndarray:
    """A model-range volume as the [0, 1] volume inside ``mask`` (the model's own output, unpaired)."""
    return np.clip(from_model_range(x.numpy(), intensity), 0.0, 1.0) * mask


def shown_counterfactual(result, w: float, unit: np.ndarray, mask: np.ndarray, intensity) -> np.ndarray:
    """The model-grid counterfactual a user sees at ``w``, in [0, 1] inside ``mask``: of a paired run the input
    ``unit`` plus the paired change, of an unpaired one the model's output. The evaluation measures this very array."""
    if result.source_images is None:
        return model_output(result.images[float(w)], mask, intensity)
    out = from_model_range(result.images[float(w)].numpy(), intensity)  # linear: the difference keeps its units
    out = unit + (out - from_model_range(result.source_images[float(w)].numpy(), intensity))
    return np.clip(out, 0.0, 1.0) * mask


def change_ends(result, w: float, unit: np.ndarray, mask: np.ndarray, intensity) -> tuple[np.ndarray, np.ndarray]:
    """The two images the change is read between, in [0, 1] inside ``mask``: the source-class and the target-class
    outputs of a paired run; the input and the model's output of an unpaired one."""
    target = model_output(result.images[float(w)], mask, intensity)
    if result.source_images is None:
        return np.asarray(unit, np.float32) * mask, target
    return model_output(result.source_images[float(w)], mask, intensity), target


def show(result, w: float, prepared: Prepared, intensity, change: str = DEFORMATION) -> tuple[np.ndarray, Warp | None]:
    """The model-grid counterfactual a user sees at ``w`` (in [0, 1] inside the mask) and its warp (None for an
    intensity change). The product, the evaluation and the augmentation all measure this very array."""
    if change == INTENSITY:
        return shown_counterfactual(result, w, prepared.model_input, prepared.mask, intensity), None
    if change != DEFORMATION:
        raise ValueError(f"change must be one of {CHANGES}, got {change!r}")
    source, target = change_ends(result, w, prepared.model_input, prepared.mask, intensity)
    warp = estimate_warp(source, target, prepared.grid)
    return prepared.warped_on_grid(warp), warp


def choose_source(source: str | int | None, verdict: dict[str, float], class_names) -> str | None:
    """The source class of a paired run: ``"auto"`` -> the classifier's verdict on the input."""
    if source is None:
        return None
    if source != AUTO:
        return class_names[source] if isinstance(source, int) else source
    if not verdict:
        raise ValueError(
            "a paired counterfactual with source 'auto' needs a classifier (its verdict on the input is the source "
            "class); give a classifier, the source class, or no source (unpaired)"
        )
    return max(verdict, key=verdict.get)


def run_counterfactual(
    model,
    image: sitk.Image,
    target: str | int,
    scales: float | Sequence[float],
    sampling: SamplingConfig | None = None,
    *,
    seed: int = 0,
    preprocessed: bool = False,
    classifier=None,
    on_step: StepCallback | None = None,
    should_stop: StopCallback | None = None,
    on_stage: Callable[[str], None] | None = None,
    accept_unusual: bool = False,
    source: str | int | None = None,
    change: str = CHANGE,
) -> CounterfactualRun:
    """Counterfactuals of ``image`` toward ``target`` for each w; see the module docstring.

    ``on_stage(name)`` announces "preparing", "sampling", "mapping back" and "verdicts"; ``should_stop`` is asked
    before each of them and before every sampling step (:class:`~ControlCGLib.progress.Cancelled` when it says yes).
    A scan that does not look like a whole-brain T1 is refused (:class:`~ControlCGLib.imaging.scan_checks.ScanRefused`)
    unless ``accept_unusual``; then the findings are kept in ``settings["scan_warnings"]``. ``source``: see the
    module docstring. ``change``: how the change is shown, "deformation" (the product's) or "intensity".
    """
    if change not in CHANGES:
        raise ValueError(f"change must be one of {CHANGES}, got {change!r}")

    def stage(name: str) -> None:
        if should_stop is not None and should_stop():
            raise Cancelled(f"cancelled before {name}")
        if on_stage is not None:
            on_stage(name)

    config = model.config
    if classifier is not None:
        grid_factors(config.grid, classifier.config.grid)  # the classifier reads the model grid, or a whole coarsening
    if classifier is not None and sorted(classifier.config.class_names) != sorted(config.class_names):
        raise ValueError(
            f"the classifier's classes {list(classifier.config.class_names)} differ from the model's "
            f"{list(config.class_names)}: its verdicts would not speak of the counterfactual's class"
        )
    config.class_index(target)  # an unknown class (target or source) is refused before the (slow) registration
    if source not in (None, AUTO):
        config.class_index(source)
    if source == AUTO and classifier is None:
        choose_source(source, {}, config.class_names)
    stage("preparing")
    screen = "warn" if accept_unusual else "refuse"

    def registration_step(i: int, metric: float) -> None:  # a cancel also stops the registration, within one step
        if should_stop is not None and should_stop():
            raise Cancelled(f"cancelled during registration (iteration {i})")

    prepared = prepare(
        image,
        config.grid,
        preprocessed=preprocessed,
        intensity=config.intensity,
        screen=screen,
        on_iteration=registration_step,
    )
    y0 = torch.from_numpy(np.asarray(to_model_range(prepared.model_input, config.intensity), dtype=np.float32))
    input_verdict = {}
    asked = VolumeClassifier(classifier) if classifier is not None else None
    if asked is not None:
        input_verdict = asked.verdict(prepared.model_input)
    source = choose_source(source, input_verdict, list(config.class_names))
    stage("sampling")
    result = counterfactual(
        model, y0, target, scales, sampling, seed=seed, on_step=on_step, should_stop=should_stop, source=source
    )
    unit, mask = prepared.model_input, prepared.mask
    raw = {w: model_output(x, mask, config.intensity) for w, x in result.images.items()}
    stage("mapping back")
    shown = {w: show(result, w, prepared, config.intensity, change) for w in result.images}
    grid_cf = {w: cf for w, (cf, _) in shown.items()}
    warps = {w: warp for w, (_, warp) in shown.items() if warp is not None}
    native, volumes = {}, {}
    if warps:
        from .imaging.deformation import warp_array
        from .regions import region_fractions, regional_volumes

        fractions = region_fractions()
        for w, warp in warps.items():
            start, end = change_ends(result, w, unit, mask, config.intensity)
            native[w] = prepared.to_native_warped(warp, raw[w], end - warp_array(start, warp, prepared.grid))
            volumes[w] = regional_volumes(warp, prepared.transform, fractions)
    else:
        native = {w: prepared.to_native(cf, raw[w]) for w, cf in grid_cf.items()}
    verdicts, raw_verdicts = {}, {}
    if asked is not None:
        stage("verdicts")
        verdicts = {w: asked.verdict(cf) for w, cf in grid_cf.items()}
        raw_verdicts = verdicts if source is None else {w: asked.verdict(x) for w, x in raw.items()}
    settings = {
        **result.settings,
        "preprocessed": preprocessed,
        "registration_metric": prepared.registration_metric,
        "scan_checks": prepared.screening.as_dict() if prepared.screening else None,
        "scan_warnings": list(prepared.warnings),
        "code_version": __version__,
        "sampling": to_dict(sampling or SamplingConfig()),
        "change": change,
    }
    return CounterfactualRun(
        prepared, grid_cf, native, input_verdict, verdicts, settings, raw, raw_verdicts, source, change, warps, volumes
    )

"""The main job, end to end: a T1 in any geometry -> counterfactuals toward a class, back on its own grid.

One function serves the command line and Slicer's background process: prepare the scan
(imaging/native_space.py), run the one sampling loop (sampling/sampler.py) for every requested w, bring each
counterfactual back (detail and resampled), and ask the classifier, when one is given, what it thinks of the input
and of each counterfactual.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from . import __version__
from .imaging.intensity import from_model_range, to_model_range
from .imaging.native_space import NativeResult, Prepared, prepare
from .model.classifier import classify
from .model.config import to_dict
from .progress import Cancelled, StepCallback, StopCallback
from .sampling.sampler import counterfactual
from .sampling.settings import SamplingConfig


@dataclass
class CounterfactualRun:
    prepared: Prepared
    model_grid: dict[float, np.ndarray]  # counterfactual per w on the model grid, in [0, 1]
    native: dict[float, NativeResult]  # per w, on the input's own grid
    input_verdict: dict[str, float] = field(default_factory=dict)  # class -> probability (empty: no classifier)
    verdicts: dict[float, dict[str, float]] = field(default_factory=dict)  # per w: class -> probability
    settings: dict[str, Any] = field(default_factory=dict)


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
) -> CounterfactualRun:
    """Counterfactuals of ``image`` toward ``target`` for each w; see the module docstring.

    ``on_stage(name)`` announces "preparing", "sampling", "mapping back" and "verdicts"; ``should_stop`` is asked
    before each of them and before every sampling step (:class:`~ControlCGLib.progress.Cancelled` when it says yes).
    A scan that does not look like a whole-brain T1 is refused (:class:`~ControlCGLib.imaging.scan_checks.ScanRefused`)
    unless ``accept_unusual``; then the findings are kept in ``settings["scan_warnings"]``.
    """

    def stage(name: str) -> None:
        if should_stop is not None and should_stop():
            raise Cancelled(f"cancelled before {name}")
        if on_stage is not None:
            on_stage(name)

    config = model.config
    if classifier is not None and tuple(classifier.config.grid) != tuple(config.grid):
        raise ValueError(f"the classifier's grid {classifier.config.grid} differs from the model's {config.grid}")
    if classifier is not None and sorted(classifier.config.class_names) != sorted(config.class_names):
        raise ValueError(
            f"the classifier's classes {list(classifier.config.class_names)} differ from the model's "
            f"{list(config.class_names)}: its verdicts would not speak of the counterfactual's class"
        )
    config.class_index(target)  # an unknown class is refused before the (slow) registration
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
    stage("sampling")
    result = counterfactual(model, y0, target, scales, sampling, seed=seed, on_step=on_step, should_stop=should_stop)
    grid_cf = {
        w: np.clip(from_model_range(x.numpy(), config.intensity), 0.0, 1.0) * prepared.mask
        for w, x in result.images.items()
    }
    stage("mapping back")
    native = {w: prepared.to_native(cf) for w, cf in grid_cf.items()}
    input_verdict, verdicts = {}, {}
    if classifier is not None:
        stage("verdicts")
        names, scale = classifier.config.class_names, classifier.config.intensity
        input_verdict = classify(classifier, to_model_range(prepared.model_input, scale), names)
        verdicts = {w: classify(classifier, to_model_range(cf, scale), names) for w, cf in grid_cf.items()}
    settings = {
        **result.settings,
        "preprocessed": preprocessed,
        "registration_metric": prepared.registration_metric,
        "scan_checks": prepared.screening.as_dict() if prepared.screening else None,
        "scan_warnings": list(prepared.warnings),
        "code_version": __version__,
        "sampling": to_dict(sampling or SamplingConfig()),
    }
    return CounterfactualRun(prepared, grid_cf, native, input_verdict, verdicts, settings)

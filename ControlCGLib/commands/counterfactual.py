"""``controlcg counterfactual`` and ``controlcg demo``: the main job, from a typed request to a result folder."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .. import defaults
from ..defaults import CHANGE, CHANGES, DEMO_SWEEP, EXIT_CANCELLED, EXIT_OK, SEED, W, w_key
from ..run_request import RunRequest
from ..sampling.settings import INJECTIONS
from .common import add_command, add_device_and_precision, add_overwrite, add_solver_and_spacing, add_threads


def _cmd_counterfactual(args) -> int:
    """The main job: counterfactuals of a T1 toward a class, on its own grid, with saliency, montage and verdicts."""
    if args.input and args.input_option and args.input != args.input_option:
        raise ValueError("give the input once (positional INPUT or --input)")
    given = args.input or args.input_option
    if not given:
        raise ValueError("no input image: controlcg counterfactual INPUT --target AD --out DIR")
    return main_job(RunRequest.from_args(args, given))


def _cmd_demo(args) -> int:
    """The main job on the bundled sample T1 (a simulated cognitively normal subject) with the embedded model."""
    from ..resources import sample_scan

    return main_job(RunRequest.from_args(args, str(sample_scan())))


def main_job(request: RunRequest) -> int:
    """Run ``request``; a cancel (the cancel file, or Ctrl-C) writes nothing and returns EXIT_CANCELLED."""
    from ..progress import Cancelled

    if request.pid_file:  # lets a parent behind a launcher (Slicer's PythonSlicer) end this very process if it must
        Path(request.pid_file).write_text(f"{os.getpid()}\n")

    def should_stop() -> bool:
        return bool(request.cancel_file) and os.path.exists(request.cancel_file)

    try:
        return run(request, should_stop)
    except (Cancelled, KeyboardInterrupt) as exc:
        print(f"cancelled: {exc or 'interrupted'}; nothing was written", file=sys.stderr, flush=True)
        return EXIT_CANCELLED


def run(request: RunRequest, should_stop) -> int:
    import numpy as np

    from ..imaging.reading import read_scan
    from ..model.checkpoints import WEIGHTS, file_sha256, load_checkpoint
    from ..model.config import ClassifierConfig, ModelConfig
    from ..outputs import RunRecord, write_result_folder
    from ..pipeline import run_counterfactual
    from ..progress import Cancelled, LineProgress, TqdmProgress
    from ..resources import classifier_dir, diffusion_dir
    from .common import choose_device, output_folder, set_threads

    set_threads(request.threads)
    out = output_folder(request.out, request.overwrite, create=False)  # checked now, created once results exist
    device = choose_device(request.device)
    lines = LineProgress() if request.progress_lines else None
    embedded = request.model is None
    model_path = Path(request.model) if request.model else diffusion_dir()
    classifier_path = Path(request.classifier) if request.classifier else None
    if classifier_path is None and embedded and not request.no_classifier:
        classifier_path = classifier_dir()  # the embedded classifier explains the embedded model's world
    model = load_checkpoint(model_path, map_location=device)
    if not isinstance(model.config, ModelConfig):
        raise ValueError(f"{model_path} holds a classifier, not a diffusion model; pass it as --classifier")
    classifier = load_checkpoint(classifier_path, map_location=device) if classifier_path else None
    if classifier is not None and not isinstance(classifier.config, ClassifierConfig):
        raise ValueError(f"{classifier_path} holds a diffusion model, not a classifier")
    sampling = request_sampling(request, model.config.name, device)
    trajectories = len(request.scales) * (2 if request.source else 1)  # a paired run keeps both ends per w
    _check_memory(model, trajectories, sampling, device, request.input)  # before any work on the image
    image = read_scan(request.input, request.series)
    with TqdmProgress(f"counterfactual -> {request.target}", disable=lines is not None) as bar:
        result = run_counterfactual(
            model,
            image,
            request.target,
            request.scales,
            sampling,
            seed=request.seed,
            preprocessed=request.preprocessed,
            classifier=classifier,
            on_step=lines or bar,
            should_stop=should_stop,
            on_stage=lines.stage if lines else None,
            accept_unusual=request.accept_unusual,
            source=request.source,
            change=request.change,
        )
    for warning in result.settings["scan_warnings"]:  # accepted on request, but never quietly
        print(f"WARNING: {warning}; the result is recorded with this warning", file=sys.stderr, flush=True)
    if should_stop():
        raise Cancelled("cancelled before writing")
    if lines:
        lines.stage("writing")
    record = RunRecord(
        input=str(request.input),
        target=request.target,
        model=str(model_path),
        model_sha256=file_sha256(model_path / WEIGHTS),
        class_names=list(model.config.class_names),
        settings={**result.settings, "device": device},
        classifier=str(classifier_path) if classifier_path else None,
        classifier_sha256=file_sha256(classifier_path / WEIGHTS) if classifier_path else None,
        input_verdict=result.input_verdict,
        verdicts={w_key(w): v for w, v in result.verdicts.items()},
        raw_verdicts={w_key(w): v for w, v in result.raw_verdicts.items()} if result.source else {},
        volumes={w_key(w): {k: v.as_dict() for k, v in by_region.items()} for w, by_region in result.volumes.items()},
    )
    images = {w: _images(r) for w, r in result.native.items()}
    write_result_folder(
        out,
        images,
        next(iter(result.native.values())).mask,
        record,
        montage=(lambda path: _write_montage(path, result, request.target)) if request.montage else None,
        should_stop=should_stop,
    )
    if result.input_verdict:
        for key, verdict in {
            "input": result.input_verdict,
            **{f"w={w_key(w)}": v for w, v in result.verdicts.items()},
        }.items():
            print(f"{key:8s} " + "  ".join(f"{k}={v:.3f}" for k, v in verdict.items()))
    if result.source == request.target:
        print(
            f"note: the paired counterfactual starts from {result.source}, the target itself (the classifier's verdict "
            "on the scan, or --source): the change is zero and the counterfactual is the scan. The model's own "
            "output is counterfactual_resampled_w*.nii.gz; --source sets the class to start from"
        )
    if lines:
        lines.stage("done")
    change = max(float(np.abs(c - result.prepared.model_input).max()) for c in result.model_grid.values())
    print(f"wrote {out} ({len(result.native)} counterfactuals, max |saliency| {change:.3f})")
    return EXIT_OK


def _images(r) -> dict:
    """The images of one w as the result folder names them (outputs.KINDS and, of a deformation, OPTIONAL_KINDS)."""
    out = {"counterfactual": r.detail, "counterfactual_resampled": r.resampled, "saliency": r.saliency}
    if r.volume_change is not None:
        out |= {"volume_change": r.volume_change, "residual": r.residual}
    return out


def request_sampling(request: RunRequest, model_name: str, device: str):
    """The sampling a request runs: the product's for this model (sampling/settings.product_sampling), with the
    request's changes and its precision resolved for the device."""
    from ..sampling.settings import product_sampling
    from .common import choose_precision

    precision = choose_precision(request.precision, device)
    return product_sampling(model_name, precision=precision, **request.sampling_changes())


def _check_memory(model, n_scales: int, sampling, device: str, input_path: str) -> None:
    """Refuse, with the estimate, a run that would not fit in memory (sampling/memory.py); the scan counts from its
    header."""
    import dataclasses

    from ..imaging.reading import header_voxels
    from ..sampling.memory import cache_file, check_fits, estimate, native_bytes

    try:
        config, kv = model.config, sampling.kv_stride
        est = estimate(config, n_scales, sampling.precision, sampling.injection, device, kv, cache=cache_file())
    except Exception as exc:  # the trace leans on torch internals; it must never be what stops a run
        print(f"WARNING: no memory estimate ({type(exc).__name__}: {exc}); running without it", file=sys.stderr)
        return
    voxels = header_voxels(input_path)
    if voxels:
        est = dataclasses.replace(est, images=native_bytes(voxels, n_scales))
    if check_fits(est, device, resident=est.weights) is None:
        print("note: this system does not report its free memory; the memory check was skipped", file=sys.stderr)


def _write_montage(path: Path, result, target: str) -> None:
    from ..figures import montage
    from ..imaging.deformation import log_volume_change

    grid_input = result.prepared.model_input
    columns = {"input": grid_input, **{f"w={w_key(w)}": cf for w, cf in result.model_grid.items()}}
    sal = {f"w={w_key(w)}": cf - grid_input for w, cf in result.model_grid.items()}
    mask = result.prepared.mask
    grown = {f"w={w_key(w)}": log_volume_change(warp) * mask for w, warp in result.warps.items()}
    verdicts = _labelled_verdicts(result)
    if verdicts:
        label = {k: _verdict_label(k, verdicts[k]) for k in columns}
        columns, sal, grown = ({label[k]: v for k, v in d.items()} for d in (columns, sal, grown))
    shown = "the scan deformed" if result.change == "deformation" else "the scan + the intensity change"
    montage(
        path,
        columns,
        sal,
        title=f"counterfactuals toward {target}{_pairing(result)}: {shown}\n(model grid; saliency: red = brighter)",
        spacing=result.prepared.grid.GetSpacing()[::-1],
        volume_change=grown or None,
        footer=volume_table(result.volumes),
    )


def volume_table(volumes: dict) -> str:
    """The regional volumes of a deformation run as a plain-text table (input mL, then the change in % per w)."""
    if not volumes:
        return ""
    scales = sorted(volumes)
    regions = list(volumes[scales[0]])
    lines = ["region            input mL  " + "  ".join(f"{'w=' + w_key(w):>8s}" for w in scales)]
    for region in regions:
        first = volumes[scales[0]][region]
        cells = "  ".join(f"{volumes[w][region].change_percent:+7.1f}%" for w in scales)
        lines.append(f"{region:16s} {first.input_ml:9.1f}  {cells}")
    lines.append("atlas regions under the scan's registration; % = the counterfactual's volume change")
    return "\n".join(lines)


def _pairing(result) -> str:
    return f", paired with {result.source}" if result.source else ", unpaired"


def _labelled_verdicts(result) -> dict[str, dict[str, float]]:
    """ "input" and "w=4" -> class -> probability, as the montage and the console show them (empty: no classifier)."""
    if not result.input_verdict:
        return {}
    return {"input": result.input_verdict, **{f"w={w_key(w)}": v for w, v in result.verdicts.items()}}


def _verdict_label(key: str, verdict: dict[str, float]) -> str:
    best = max(verdict, key=verdict.get)
    return f"{key}\nclassifier: {best} {verdict[best]:.2f}"


def _options(p: argparse.ArgumentParser, default_w) -> None:
    p.add_argument(
        "--w", type=float, nargs="+", default=list(default_w), help="guidance scales (one run computes them all)"
    )
    p.add_argument("--model", default=None, help="diffusion model folder; unset: the embedded model")
    p.add_argument("--classifier", default=None, help="classifier folder for verdicts; unset: the embedded one")
    p.add_argument("--no-classifier", action="store_true", help="skip the classifier's verdicts")
    p.add_argument(
        "--source",
        default="auto",
        help="paired counterfactual: the change is CF(target) - CF(source) from the same noise, shown on the scan. "
        "'auto' (default): the classifier's verdict on the input; a class name; 'none': the unpaired model output "
        "(the paper's, with --no-blend)",
    )
    p.add_argument("--preprocessed", action="store_true", help="input is skull-stripped and in MNI space already")
    p.add_argument(
        "--accept-unusual-scan",
        action="store_true",
        help="explain a scan the checks think is not a whole-brain T1 (warned, and recorded in result.json)",
    )
    p.add_argument(
        "--steps", type=int, default=None,
        help=f"the grid's steps from pure noise (default: the product's, {defaults.STEPS.default:g})",
    )  # fmt: skip
    add_solver_and_spacing(p)
    p.add_argument(
        "--start-strength",
        type=float,
        default=None,
        help="1 starts from pure noise (the paper); below 1 from the input noised that far (keeps more of the input; "
        f"default: the product's, {defaults.START_STRENGTH.default:g})",
    )
    p.add_argument(
        "--injection",
        choices=INJECTIONS,
        default=None,
        help="attention injection (Eq. 8); auto = on for a paper-preset model, off for the embedded cpu model, where "
        f"it measurably changed nothing and cost a UNet pass per step (default: the product's, {defaults.INJECTION})",
    )
    p.add_argument(
        "--blend",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep the input outside the region that changes, during sampling (default: the product's, "
        f"{'on' if defaults.BLEND else 'off'}; --no-blend with "
        "--source none gives the paper's raw output)",
    )
    p.add_argument(
        "--change",
        choices=CHANGES,
        default=CHANGE,
        help="how the change is shown: 'deformation' (default) warps the scan itself (its own intensities and "
        "resolution; writes volume_change_w*.nii.gz, the log of the local volume ratio, and regional volumes in "
        "result.json); 'intensity' adds the model outputs' difference to the scan",
    )
    p.add_argument("--seed", type=int, default=int(SEED.default))
    add_threads(p)
    add_overwrite(p)
    add_device_and_precision(p)
    p.add_argument("--no-montage", action="store_true", help="skip montage.png (no matplotlib needed)")
    p.add_argument(
        "--progress", choices=["bar", "lines"], default="bar", help="a progress bar, or one parseable line per event"
    )
    p.add_argument("--cancel-file", default=None, help="stop within one step (writing nothing) once this file exists")
    p.add_argument("--pid-file", default=None, help="write this process's id here when it starts")


def register(sub) -> None:
    p = add_command(sub, "demo", "the main job on the bundled sample T1 with the embedded model", _cmd_demo)
    p.add_argument("--out", default="controlcg-demo", help="output folder")
    p.add_argument("--target", default="AD", help="class to move toward (the sample is cognitively normal)")
    _options(p, DEMO_SWEEP)

    p = add_command(sub, "counterfactual", "counterfactuals of a T1 toward a class (the main job)", _cmd_counterfactual)
    p.add_argument("input", nargs="?", help="T1 image (NIfTI, NRRD, MHA, ...) or a folder of one DICOM series")
    p.add_argument("--input", dest="input_option", default=None, help="the same, as an option")
    p.add_argument("--series", default=None, help="DICOM series ID, when the input folder holds several")
    p.add_argument("--target", required=True, help="class to move toward, e.g. AD or CN")
    p.add_argument("--out", required=True, help="output folder")
    _options(p, (W.default,))

"""The ``controlcg`` command line. Heavy imports (torch, MONAI) happen inside each command, so ``--help`` is fast.

Subcommands grow with the project; each is a function ``_cmd_NAME(args)`` registered in :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__


def _output_folder(path: str, overwrite: bool, create: bool = True) -> Path:
    """The output folder (created unless ``create`` is False); an existing non-empty one only with ``--overwrite``,
    so nothing of the user's is replaced by accident."""
    out = Path(path)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ValueError(f"{out} exists and is not empty; pass --overwrite or choose another --out")
    _check_writable(out)
    if create:
        out.mkdir(parents=True, exist_ok=True)
    return out


def _check_writable(out: Path) -> None:
    """Refuse, before any compute, an output folder that cannot be written: try a file in its nearest existing
    folder (a permission check alone would pass for root on a read-only file system)."""
    import tempfile

    parent = out if out.exists() else next(p for p in out.absolute().parents if p.exists())
    if not parent.is_dir():
        raise ValueError(f"cannot write {out}: {parent} is a file, not a folder; choose another --out")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise ValueError(f"cannot write into {parent} ({exc.strerror or exc}); choose another --out") from None


def _cmd_presets(args) -> int:
    from .model.config import PRESETS, preset, to_dict

    names = [args.name] if args.name else sorted(PRESETS)
    out = {n: to_dict(preset(n)) for n in names}
    print(json.dumps(out if len(names) > 1 else out[names[0]], indent=2))
    return 0


def _cmd_toy_demo(args) -> int:
    """Train the toy model, make counterfactuals across w, write a montage (no brain data or embedded model needed)."""
    import torch
    from tqdm.auto import tqdm

    from .data.toy import ball_brightness, ball_volume, toy_batch, train_toy
    from .figures import montage
    from .imaging.intensity import from_model_range
    from .imaging.saliency import saliency_maps
    from .model.checkpoints import save_checkpoint
    from .progress import TqdmProgress
    from .sampling.noise import make_generator
    from .sampling.sampler import counterfactual
    from .sampling.settings import SamplingConfig

    out = _output_folder(args.out, args.overwrite)
    torch.set_num_threads(args.threads)

    bar = tqdm(total=args.train_steps, desc="training toy model", unit="step", mininterval=1.0)
    trained = train_toy(
        steps=args.train_steps,
        seed=args.seed,
        on_step=lambda i, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}")),
    )
    bar.close()
    model = trained.model
    save_checkpoint(
        model,
        model.config,
        out / "toy-model",
        provenance={"what": "controlcg demo", "steps": args.train_steps, "seed": args.seed},
    )

    x, _, _ = toy_batch(1, make_generator(args.seed + 1000), labels=torch.zeros(1, dtype=torch.long))
    y0 = x[0, 0]
    ws = tuple(args.w)
    sampling = SamplingConfig(steps=args.steps)
    with TqdmProgress("counterfactual small -> large") as progress:
        result = counterfactual(model, y0, "large", ws, sampling, seed=args.seed, on_step=progress)

    unit = from_model_range(y0).numpy()
    columns = {"input (small)": unit}
    saliency = {}
    summary = {
        "input": {"volume": float(ball_volume(y0)), "brightness": float(ball_brightness(y0))},
        "counterfactuals": {},
    }
    for w in ws:
        cf = from_model_range(result[w]).clamp(0, 1).numpy()
        columns[f"w={w:g}"] = cf
        saliency[f"w={w:g}"] = saliency_maps(unit, cf).signed
        summary["counterfactuals"][f"{w:g}"] = {
            "volume": float(ball_volume(result[w])),
            "brightness": float(ball_brightness(result[w])),
        }
    summary["seconds"] = result.seconds
    summary["settings"] = result.settings
    png = montage(
        out / "montage.png", columns, saliency, title="toy counterfactuals: small ball -> large ball, across w"
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("input", "counterfactuals")}, indent=2))
    print(f"wrote {png} and {out / 'summary.json'} ({result.seconds:.1f} s of sampling)")
    return 0


def _cmd_template(args) -> int:
    from .data.template import derive_template

    written = derive_template(args.source, args.out, spacing=args.spacing)
    for name, path in written.items():
        print(f"{name:5s} {path}")
    return 0


def _cmd_simulate(args) -> int:
    """Write a simulated cohort with true counterfactuals and change maps, and report the ventricle effect size."""
    import csv
    import statistics

    from tqdm.auto import tqdm

    from .data.simulator import write_cohort

    out = _output_folder(args.out, args.overwrite)
    grid = None if args.template_grid else tuple(args.grid)
    with tqdm(total=args.n, desc="simulating subjects", unit="subject", mininterval=1.0) as bar:
        manifest = write_cohort(out, args.n, grid, seed=args.seed, on_subject=lambda i, rec: bar.update(1))
    with open(manifest, newline="") as f:
        rows = list(csv.DictReader(f))
    volumes = {c: [float(r["ventricle_ml"]) for r in rows if r["label"] == c] for c in ("CN", "AD")}
    for c, v in volumes.items():
        if v:
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            print(f"{c}: n={len(v)} ventricle volume {statistics.mean(v):.1f} +- {sd:.1f} mL")
    if all(len(v) > 1 for v in volumes.values()):
        pooled = ((statistics.variance(volumes["CN"]) + statistics.variance(volumes["AD"])) / 2) ** 0.5
        d = (statistics.mean(volumes["AD"]) - statistics.mean(volumes["CN"])) / pooled
        print(f"Cohen's d (AD vs CN ventricle volume): {d:.2f}")
    print(f"wrote {manifest}")
    return 0


def _cmd_train_diffusion(args) -> int:
    """Train (or resume) the diffusion model on a cohort CSV (a simulated manifest or an ADNI-style list)."""
    import torch
    from tqdm.auto import tqdm

    from .data.cohort import CohortDataset, read_cohort, split_by_subject
    from .model.config import preset
    from .training.diffusion_trainer import TrainConfig, train_diffusion
    from .training.distributed import init_from_env, shutdown

    device = args.device
    rank, world = init_from_env(device)
    if world > 1 and device.startswith("cuda"):
        device = f"cuda:{torch.cuda.current_device()}"

    config = preset(args.preset)
    scans = read_cohort(args.cohort, config.class_names)
    splits = split_by_subject(scans, seed=args.seed)
    if "train" not in splits:
        raise ValueError(f"{args.cohort} has no 'train' split (splits: {sorted(splits)})")
    dataset = CohortDataset(splits["train"], config.grid, config.class_names, config.intensity)
    train = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        precision=args.precision,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
    )
    with tqdm(total=args.steps, desc="training diffusion", unit="step", mininterval=2.0, disable=rank != 0) as bar:

        def progress(step, loss):
            bar.n = step
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            bar.refresh()

        result = train_diffusion(
            config,
            dataset,
            args.out,
            train,
            device=device,
            on_step=progress,
            provenance={"cohort": str(args.cohort), "subjects": len(splits["train"])},
        )
    shutdown()
    if rank == 0:
        print(f"wrote {result.folder}")
    return 0


def _cmd_counterfactual(args) -> int:
    """The main job: counterfactuals of a T1 toward a class, on its own grid, with saliency, montage and verdicts."""
    if args.input and args.input_option and args.input != args.input_option:
        raise ValueError("give the input once (positional INPUT or --input)")
    args.input = args.input or args.input_option
    if not args.input:
        raise ValueError("no input image: controlcg counterfactual INPUT --target AD --out DIR")
    return _main_job(args)


def _cmd_demo(args) -> int:
    """The main job on the bundled sample T1 (a simulated cognitively normal subject) with the embedded model."""
    from .resources import sample_scan

    args.input = str(sample_scan())
    return _main_job(args)


EXIT_CANCELLED = 130  # the conventional code of an interrupted command; the Slicer panel reads it as "cancelled"


def _main_job(args) -> int:
    from .progress import Cancelled

    if args.pid_file:  # lets a parent behind a launcher (Slicer's PythonSlicer) end this very process if it must
        Path(args.pid_file).write_text(f"{os.getpid()}\n")
    cancel_file = args.cancel_file

    def should_stop() -> bool:
        return bool(cancel_file) and os.path.exists(cancel_file)

    try:
        return _run_main_job(args, should_stop)
    except (Cancelled, KeyboardInterrupt) as exc:
        print(f"cancelled: {exc or 'interrupted'}; nothing was written", file=sys.stderr, flush=True)
        return EXIT_CANCELLED


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: this torch sees no CUDA GPU (use --device cpu or auto)")
    return name


def _precision(name: str, device: str) -> str:
    """``auto``: bfloat16 autocast where the hardware computes it natively (measured 2.4x faster per UNet pass on
    this project's avx512_bf16 CPU, same evaluation metrics; benchmarks/speed.py), else fp32."""
    import torch

    if name != "auto":
        return name
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    try:
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    except (AttributeError, RuntimeError):  # a torch without the probe: stay exact
        return "fp32"


def _run_main_job(args, should_stop) -> int:
    import numpy as np
    import torch

    from .imaging.reading import read_scan
    from .model.checkpoints import WEIGHTS, file_sha256, load_checkpoint
    from .model.config import ClassifierConfig, ModelConfig
    from .pipeline import run_counterfactual
    from .progress import Cancelled, LineProgress, TqdmProgress
    from .resources import classifier_dir, diffusion_dir
    from .sampling.settings import SamplingConfig

    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    torch.set_num_threads(args.threads)
    out = _output_folder(args.out, args.overwrite, create=False)  # checked now, created once results exist
    device = _device(args.device)
    lines = LineProgress() if args.progress == "lines" else None
    embedded = args.model is None
    model_path = Path(args.model) if args.model else diffusion_dir()
    classifier_path = Path(args.classifier) if args.classifier else None
    if classifier_path is None and embedded and not args.no_classifier:
        classifier_path = classifier_dir()  # the embedded classifier explains the embedded model's world
    model = load_checkpoint(model_path, map_location=device)
    if not isinstance(model.config, ModelConfig):
        raise ValueError(f"{model_path} holds a classifier, not a diffusion model; pass it as --classifier")
    classifier = load_checkpoint(classifier_path, map_location=device) if classifier_path else None
    if classifier is not None and not isinstance(classifier.config, ClassifierConfig):
        raise ValueError(f"{classifier_path} holds a diffusion model, not a classifier")
    sampling = SamplingConfig(
        steps=args.steps, start_strength=args.start_strength, precision=_precision(args.precision, device)
    )
    _check_memory(model, len(args.w), sampling, device, args.input)  # before any work on the image
    image = read_scan(args.input, getattr(args, "series", None))
    with TqdmProgress(f"counterfactual -> {args.target}", disable=lines is not None) as bar:
        run = run_counterfactual(
            model,
            image,
            args.target,
            tuple(args.w),
            sampling,
            seed=args.seed,
            preprocessed=args.preprocessed,
            classifier=classifier,
            on_step=lines or bar,
            should_stop=should_stop,
            on_stage=lines.stage if lines else None,
            accept_unusual=args.accept_unusual_scan,
        )
    for warning in run.settings["scan_warnings"]:  # accepted on request, but never quietly
        print(f"WARNING: {warning}; the result is recorded with this warning", file=sys.stderr, flush=True)
    if should_stop():
        raise Cancelled("cancelled before writing")
    if lines:
        lines.stage("writing")
    model_sha = file_sha256(model_path / WEIGHTS)
    record = {
        "input": str(args.input),
        "target": args.target,
        "model": str(model_path),
        "model_sha256": model_sha,
        "classifier": str(classifier_path) if classifier_path else None,
        "classifier_sha256": file_sha256(classifier_path / WEIGHTS) if classifier_path else None,
        "class_names": list(model.config.class_names),
        "verdicts": run.verdicts,
        "settings": {**run.settings, "device": device},
    }
    made = [p for p in (out, *out.absolute().parents) if not p.exists()]  # deepest first
    out.mkdir(parents=True, exist_ok=True)
    try:
        _write_results(out, run, record, args, should_stop)
    except BaseException:  # a failure or a cancel while writing leaves --out (and its parents) as they were
        for folder in made:
            try:
                folder.rmdir()  # only while empty
            except OSError:
                break
        raise
    if run.verdicts:
        for key, verdict in run.verdicts.items():
            print(f"{key:8s} " + "  ".join(f"{k}={v:.3f}" for k, v in verdict.items()))
    if lines:
        lines.stage("done")
    print(
        f"wrote {out} ({len(run.native)} counterfactuals, max |saliency| "
        f"{max(float(np.abs(c - run.prepared.model_input).max()) for c in run.model_grid.values()):.3f})"
    )
    return 0


def _check_memory(model, n_scales: int, sampling, device: str, input_path: str) -> None:
    """Refuse, with the estimate, a run that would not fit in memory (sampling/memory.py); the scan counts from its
    header."""
    import dataclasses

    from .imaging.reading import header_voxels
    from .sampling.memory import check_fits, estimate, native_bytes

    try:
        est = estimate(model.config, n_scales, sampling.precision, sampling.injection, device)
    except Exception as exc:  # the trace leans on torch internals; it must never be what stops a run
        print(f"WARNING: no memory estimate ({type(exc).__name__}: {exc}); running without it", file=sys.stderr)
        return
    voxels = header_voxels(input_path)
    if voxels:
        est = dataclasses.replace(est, images=native_bytes(voxels, n_scales))
    if check_fits(est, device, resident=est.weights) is None:
        print("note: this system does not report its free memory; the memory check was skipped", file=sys.stderr)


def _write_results(out: Path, run, record: dict, args, should_stop) -> None:
    """Every output into a temporary folder inside ``out``, moved in only when all are written: a failure or a
    cancel leaves nothing half-made. Each NIfTI carries its provenance in the header's description (80 characters:
    code version, kind, w, target, seed, model checksum); result.json has the rest."""
    import shutil
    import tempfile

    import SimpleITK as sitk

    from .progress import Cancelled

    with tempfile.TemporaryDirectory(dir=out) as tmp:
        tmp = Path(tmp)
        outputs: dict[str, dict[str, str]] = {}
        for w, res in run.native.items():
            for kind, img in (
                ("counterfactual", res.detail),
                ("counterfactual_resampled", res.resampled),
                ("saliency", res.saliency),
            ):
                name = f"{kind}_w{w:g}.nii.gz"
                img.SetMetaData("ITK_FileNotes", _provenance(kind, w, record, args.seed))
                sitk.WriteImage(img, str(tmp / name), useCompression=True)
                outputs.setdefault(f"{w:g}", {})[kind] = name
        sitk.WriteImage(next(iter(run.native.values())).mask, str(tmp / "brain_mask.nii.gz"), useCompression=True)
        extra = ["brain_mask.nii.gz"]
        if not args.no_montage:
            _write_montage(tmp / "montage.png", run, args.target)
            extra.append("montage.png")
        files = sorted([*(f for kinds in outputs.values() for f in kinds.values()), *extra])
        record = {**record, "outputs": outputs, "files": files}
        (tmp / "result.json").write_text(json.dumps(record, indent=2, default=float) + "\n")
        if should_stop():  # last chance: --out still holds nothing of this run
            raise Cancelled("cancelled before writing")
        for f in tmp.iterdir():
            shutil.move(str(f), out / f.name)


def _provenance(kind: str, w: float, record: dict, seed: int) -> str:
    """The NIfTI description (at most 79 characters are kept by the format)."""
    short = {"counterfactual": "cf", "counterfactual_resampled": "cf-resampled", "saliency": "saliency"}[kind]
    model = record["model_sha256"][:12]
    text = f"ControlCG {__version__} model {model} {short} w={w:g} to {record['target']} seed {seed}"
    return text[:79]  # the checksum comes first, so that a long w or class name cannot push it out


def _write_montage(path: Path, run, target: str) -> None:
    from .figures import montage

    grid_input = run.prepared.model_input
    columns = {"input": grid_input, **{f"w={w:g}": cf for w, cf in run.model_grid.items()}}
    sal = {f"w={w:g}": cf - grid_input for w, cf in run.model_grid.items()}
    if run.verdicts:
        columns = {_verdict_label(k, run.verdicts[k]): v for k, v in columns.items()}
        sal = {_verdict_label(k, run.verdicts[k]): v for k, v in sal.items()}
    montage(
        path,
        columns,
        sal,
        title=f"counterfactuals toward {target} (model grid; signed saliency, red = brighter)",
        spacing=run.prepared.grid.GetSpacing()[::-1],
    )


def _verdict_label(key: str, verdict: dict[str, float]) -> str:
    best = max(verdict, key=verdict.get)
    return f"{key}\nclassifier: {best} {verdict[best]:.2f}"


def _cmd_train_classifier(args) -> int:
    """Train the diagnostic classifier on a cohort CSV; the best validation accuracy's weights are kept."""
    from .data.cohort import CohortDataset, read_cohort, split_by_subject
    from .model.config import CLASSIFIER_PRESETS
    from .training.classifier_trainer import ClassifierTrainConfig, train_classifier

    config = CLASSIFIER_PRESETS[args.preset]
    scans = read_cohort(args.cohort, config.class_names)
    splits = split_by_subject(scans, seed=args.seed)
    if "train" not in splits or "val" not in splits:
        raise ValueError(f"{args.cohort} needs 'train' and 'val' splits (has {sorted(splits)})")
    data = {k: CohortDataset(v, config.grid, config.class_names, config.intensity) for k, v in splits.items()}
    train = ClassifierTrainConfig(
        steps=args.steps, batch_size=args.batch_size, lr=args.lr, eval_every=args.eval_every, seed=args.seed
    )

    def report(step, loss, accuracy):
        print(f"step {step}: loss {loss:.4f}, validation accuracy {accuracy:.3f}", flush=True)

    origin = {"cohort": str(args.cohort), "subjects": {k: len(v) for k, v in splits.items()}}
    folder = train_classifier(config, data["train"], data["val"], args.out, train, on_eval=report, provenance=origin)
    print(f"wrote {folder}")
    return 0


def _cmd_evaluate(args) -> int:
    """Every method on a simulated cohort with ground truth; report folder with the paper's tables (see README)."""
    import dataclasses

    import torch
    from tqdm.auto import tqdm

    from .evaluation.measures import AugmentationSettings, EvaluationSettings
    from .evaluation.run import FAST, FAST_AUGMENTATION, run_evaluation
    from .model.checkpoints import load_checkpoint
    from .resources import classifier_dir, diffusion_dir, judge_dir

    torch.set_num_threads(args.threads)
    settings = FAST if args.fast else EvaluationSettings()
    changes = {k: v for k, v in {"steps": args.steps, "default_w": args.default_w}.items() if v is not None}
    if args.w:
        changes["scales"] = tuple(args.w)
    if args.seeds:
        changes["seeds"] = tuple(args.seeds)
        changes["axioms_seed"] = args.seeds[0]
    settings = dataclasses.replace(settings, **changes)
    if settings.default_w not in settings.scales:
        settings = dataclasses.replace(settings, scales=tuple(sorted({*settings.scales, settings.default_w})))
    augmentation = FAST_AUGMENTATION if args.fast else AugmentationSettings()
    if args.augment_real or args.augment_steps:
        augmentation = dataclasses.replace(
            augmentation,
            real=args.augment_real or augmentation.real,
            steps=args.augment_steps or augmentation.steps,
        )
    n = args.n if args.n is not None else (2 if args.fast else 8)
    out = _output_folder(args.out, args.overwrite)
    model = load_checkpoint(args.model or diffusion_dir())
    classifier = load_checkpoint(args.classifier or classifier_dir())
    judge = load_checkpoint(args.judge or judge_dir())
    bar = tqdm(total=n * len(settings.seeds), desc="subjects x seeds", unit="run", mininterval=2.0)
    summary = run_evaluation(
        args.cohort,
        out,
        model,
        classifier,
        judge,
        settings,
        n=n,
        augment_cohort=args.augment_cohort,
        augmentation=augmentation,
        on_item=lambda item: bar.update(1),
    )
    bar.close()
    if summary is not None:
        ours = summary["methods"]["ours"]
        print(f"ours at w={settings.default_w:g}: SSIM {ours['ssim']:.3f}, flip {ours['flip_rate']:.2f}")
        print(f"wrote {out}/report.md, summary.json, rows.csv, tradeoff.png, montage_w.png, montage_methods.png")
    return 0


def _command(sub, name: str, help: str, func) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.set_defaults(func=func)
    return p


DEFAULT_W = 4.0  # the product's default guidance scale (see README, "Decisions the paper leaves open")
# The product starts from the input noised to 30 % of the trajectory rather than from pure noise (the paper, and
# SamplingConfig's default): measured on held-out simulated subjects with the embedded model, it keeps more of the
# input (SSIM) and matches the true counterfactual better at the same flip rate, in 30 % of the time (README).
DEFAULT_START_STRENGTH = 0.3


def _main_job_options(p: argparse.ArgumentParser, default_w: list[float]) -> None:
    from .sampling.settings import SamplingConfig

    p.add_argument("--w", type=float, nargs="+", default=default_w, help="guidance scales (one run computes them all)")
    p.add_argument("--model", default=None, help="diffusion model folder; unset: the embedded model")
    p.add_argument("--classifier", default=None, help="classifier folder for verdicts; unset: the embedded one")
    p.add_argument("--no-classifier", action="store_true", help="skip the classifier's verdicts")
    p.add_argument("--preprocessed", action="store_true", help="input is skull-stripped and in MNI space already")
    p.add_argument(
        "--accept-unusual-scan",
        action="store_true",
        help="explain a scan the checks think is not a whole-brain T1 (warned, and recorded in result.json)",
    )
    p.add_argument("--steps", type=int, default=SamplingConfig.steps, help="DDIM steps")
    p.add_argument(
        "--start-strength",
        type=float,
        default=DEFAULT_START_STRENGTH,
        help="1 starts from pure noise (the paper); below 1 from the input noised that far (keeps more of the input)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where the model runs")
    p.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="UNet arithmetic; auto = bfloat16 where the hardware has it natively",
    )
    p.add_argument("--no-montage", action="store_true", help="skip montage.png (no matplotlib needed)")
    p.add_argument(
        "--progress", choices=["bar", "lines"], default="bar", help="a progress bar, or one parseable line per event"
    )
    p.add_argument("--cancel-file", default=None, help="stop within one step (writing nothing) once this file exists")
    p.add_argument("--pid-file", default=None, help="write this process's id here when it starts")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="controlcg",
        description="Controllable counterfactuals of brain MRI with a class-conditional diffusion model (MICCAI 2024).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"controlcg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = _command(sub, "presets", "print the model configuration presets as JSON", _cmd_presets)
    p.add_argument("name", nargs="?", help="one preset (default: all)")

    p = _command(sub, "demo", "the main job on the bundled sample T1 with the embedded model", _cmd_demo)
    p.add_argument("--out", default="controlcg-demo", help="output folder")
    p.add_argument("--target", default="AD", help="class to move toward (the sample is cognitively normal)")
    _main_job_options(p, default_w=[0.0, 2.0, 4.0, 6.0])

    p = _command(sub, "toy-demo", "train a toy model on the CPU and show counterfactuals across w", _cmd_toy_demo)
    p.add_argument("--out", default="controlcg-toy-demo", help="output folder")
    p.add_argument("--train-steps", type=int, default=400, help="toy training steps")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps")
    p.add_argument("--w", type=float, nargs="+", default=[0.0, 1.0, 3.0, 6.0], help="guidance scales")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")

    p = _command(sub, "template", "derive the committed MNI template maps from nilearn's 1 mm files", _cmd_template)
    p.add_argument("--from", dest="source", required=True, help="nilearn/datasets/data folder of nilearn 0.14.1")
    p.add_argument("--out", default=None, help="output folder (default: Resources/Template)")
    p.add_argument("--spacing", type=float, default=2.0, help="output voxel size in mm")

    p = _command(
        sub, "simulate", "write a simulated AD/CN cohort with true counterfactuals and change maps", _cmd_simulate
    )
    p.add_argument("--out", required=True, help="output folder (NIfTI files and manifest.csv)")
    p.add_argument("--n", type=int, default=20, help="number of subjects")
    p.add_argument("--grid", type=int, nargs=3, default=[80, 96, 80], metavar=("Z", "Y", "X"), help="model grid")
    p.add_argument("--template-grid", action="store_true", help="keep the template's 2 mm grid instead of --grid")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    p = _command(sub, "counterfactual", "counterfactuals of a T1 toward a class (the main job)", _cmd_counterfactual)
    p.add_argument("input", nargs="?", help="T1 image (NIfTI, NRRD, MHA, ...) or a folder of one DICOM series")
    p.add_argument("--input", dest="input_option", default=None, help="the same, as an option")
    p.add_argument("--series", default=None, help="DICOM series ID, when the input folder holds several")
    p.add_argument("--target", required=True, help="class to move toward, e.g. AD or CN")
    p.add_argument("--out", required=True, help="output folder")
    _main_job_options(p, default_w=[DEFAULT_W])

    p = _command(sub, "evaluate", "compare ours with ILVR and DDIM inversion on a simulated cohort", _cmd_evaluate)
    p.add_argument(
        "--cohort", required=True, help="simulated manifest.csv (held-out subjects with true counterfactuals)"
    )
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--fast", action="store_true", help="tiny setting that proves the pipeline (CI)")
    p.add_argument("--n", type=int, default=None, help="subjects, half per class (default 8; --fast 2)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="sampling seeds (default 0 1 2; --fast 0 1)")
    p.add_argument("--w", type=float, nargs="+", default=None, help="our w sweep (default 0 2 4 6 8)")
    p.add_argument("--default-w", type=float, default=None, help="w at which methods are compared (default 4)")
    p.add_argument("--steps", type=int, default=None, help="DDIM grid of every method (default 20; --fast 4)")
    p.add_argument("--augment-cohort", default=None, help="simulated training cohort for the augmentation table")
    p.add_argument("--augment-real", type=int, default=None, help="real training scans (default 8)")
    p.add_argument("--augment-steps", type=int, default=None, help="classifier steps per method (default 300)")
    p.add_argument("--model", default=None, help="diffusion model folder (default: embedded)")
    p.add_argument("--classifier", default=None, help="the explained classifier (default: embedded)")
    p.add_argument("--judge", default=None, help="independent classifier judging the flip (default: embedded judge)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads per process")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")

    train = sub.add_parser("train", help="train models (resumes when the output folder holds a state)")
    train_sub = train.add_subparsers(dest="what", metavar="WHAT", required=True)
    p = _command(train_sub, "diffusion", "train the class-conditional diffusion model", _cmd_train_diffusion)
    p.add_argument("--cohort", required=True, help="cohort CSV (image,label,subject[,split]) or a simulated manifest")
    p.add_argument("--out", required=True, help="run folder: state/, model/, metrics.csv")
    p.add_argument("--preset", default="cpu", help="model configuration preset")
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--precision", choices=["auto", "bf16", "no"], default="auto")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")

    p = _command(train_sub, "classifier", "train the diagnostic classifier (3D DenseNet)", _cmd_train_classifier)
    p.add_argument("--cohort", required=True, help="cohort CSV (image,label,subject[,split]) or a simulated manifest")
    p.add_argument("--out", required=True, help="run folder: model/ (best validation accuracy), metrics.csv")
    p.add_argument("--preset", default="cpu", choices=["cpu", "cpu-judge", "paper"], help="classifier preset")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-2)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:  # clear message, no traceback, for the errors users can fix
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # from deep inside torch, ITK or MONAI: one line, the traceback on request
        if os.environ.get("CONTROLCG_DEBUG"):
            raise
        from .imaging.reading import error_line

        print(
            f"error: the computation failed ({type(exc).__name__}: {error_line(exc)}). "
            "Set CONTROLCG_DEBUG=1 for the full traceback and report it if it persists",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())

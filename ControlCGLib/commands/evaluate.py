"""``controlcg evaluate``: every method on a simulated cohort with ground truth, or on a labelled real cohort without
it (evaluation/real_cohort.py), as the paper's tables."""

from __future__ import annotations

import argparse

from ..sampling.settings import UNET_PRECISIONS
from .common import add_command, add_overwrite, add_solver_and_spacing, add_threads, output_folder, set_threads


def _cmd_evaluate(args) -> int:
    """Every method on a simulated cohort with ground truth, or on a labelled real cohort without it; a report folder
    with the paper's tables (docs/results.md)."""
    import dataclasses

    from tqdm.auto import tqdm

    from ..defaults import START_STRENGTH
    from ..evaluation.augmentation import FAST_AUGMENTATION, AugmentationSettings
    from ..evaluation.measures import EvaluationSettings
    from ..evaluation.run import FAST, run_evaluation
    from ..model.checkpoints import load_checkpoint
    from ..resources import classifier_dir, diffusion_dir, judge_dir

    set_threads(args.threads)
    if not args.cohort and not args.real:
        raise ValueError("give --cohort (a simulated cohort with ground truth) and/or --real T1 files")
    settings = FAST if args.fast else EvaluationSettings()
    given = {
        "steps": args.steps,
        "default_w": args.default_w,
        "start_strength": args.start_strength,
        "solver": args.solver,
        "spacing": args.spacing,
        "kv_stride": args.kv_stride,
        "precision": args.precision,
    }
    changes = {k: v for k, v in given.items() if v is not None}
    if args.start_strength is not None:
        START_STRENGTH.check(args.start_strength, "--start-strength")
    if args.w:
        changes["scales"] = tuple(args.w)
    if args.seeds:
        changes["seeds"] = tuple(args.seeds)
        changes["axioms_seed"] = args.seeds[0]
    if args.baselines is not None:
        from ..sampling.baselines import PAPER_BASELINES

        known = {m.name: m for m in PAPER_BASELINES}
        unknown = [b for b in args.baselines if b not in known]
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}; choose from {sorted(known)}")
        changes["baselines"] = tuple(known[b] for b in args.baselines)
    if args.ablations is not None:
        changes["ablations"] = tuple(args.ablations)
    if args.axioms is not None:
        changes["axioms"] = args.axioms
    settings = dataclasses.replace(settings, **changes)
    settings.methods()  # an unknown ablation is refused before any work
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
    out = output_folder(args.out, args.overwrite)
    model = load_checkpoint(args.model or diffusion_dir())
    classifier = load_checkpoint(args.classifier or classifier_dir())
    if args.real:
        _real_scans(args.real, out, model, classifier, settings)
    if not args.cohort:
        return 0
    judge = load_checkpoint(args.judge or judge_dir())
    from ..evaluation.real_cohort import is_real_cohort

    if is_real_cohort(args.cohort):  # a labelled real cohort (controlcg prepare's prepared.csv): no truths
        return _real_cohort(args, out, model, classifier, judge, settings, augmentation)
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
        seen_anatomies=args.seen_anatomies,
        atlas_cohort=args.atlas_cohort,
    )
    bar.close()
    if summary is not None:
        methods = summary["methods"]
        for name in ("identity", "ours", "oracle"):
            if name in methods:
                m = methods[name]
                print(
                    f"{name:9s} at w={settings.default_w:g}: SSIM to the true counterfactual {m['ssim_true_cf']:.3f}, "
                    f"saliency AUROC {m['saliency_auroc']:.3f}, judge flip {m['flip_rate_judge']:.2f}"
                )
        anatomies = summary["anatomies"]
        print(f"anatomies seen in training: {anatomies['train']}; held out: {anatomies['held_out']}")
        print(f"wrote {out}/report.md, summary.json, rows.csv, tradeoff.png, montage_w.png, montage_methods.png")
    return 0


def _real_cohort(args, out, model, classifier, judge, settings, augmentation) -> int:
    """A labelled real cohort CSV without truths (evaluation/real_cohort.py): real_cohort.md, .json and rows.csv."""
    from tqdm.auto import tqdm

    from ..evaluation.real_cohort import run_real_cohort

    bar = tqdm(desc="scans", unit="scan", mininterval=2.0)
    summary = run_real_cohort(
        args.cohort,
        out,
        model,
        classifier,
        judge,
        settings,
        n=args.n,
        on_item=lambda scan: bar.update(1),
        augment_cohort=args.augment_cohort,
        augmentation=augmentation,
    )
    bar.close()
    if summary is not None:
        w = f"{float(settings.default_w):g}"
        print(f"at w={w} on {summary['subjects']} subjects without truths (SSIM to the input; flip; judge flip):")
        for name, m in summary["methods"].items():
            e = m["per_w"][w]
            judge = e["flip_judge"]["mean"]
            print(
                f"  {name:22s} {e['ssim']['mean']:.3f}  {e['flip']['mean']:.2f}  "
                f"{'-' if judge is None else f'{judge:.2f}'}"
            )
        print(f"wrote {out}/real_cohort.md, real_cohort.json, rows.csv")
    return 0


def _real_scans(paths, out, model, classifier, settings) -> None:
    """The measures without ground truth on real T1s (evaluation/real_scans.py): real_scans.json and .md."""
    import json

    from ..evaluation.real_scans import markdown, measure_real

    sampling = settings.sampling(model.config.name)  # ours as the evaluation runs it: the product, exact arithmetic
    records = measure_real(
        model,
        classifier,
        paths,
        settings.default_w,
        sampling,
        on_scan=lambda r: print(f"{r['scan']}: own class {r['own_class']}, composition MSE {r['composition_mse']:.4f}"),
    )
    (out / "real_scans.json").write_text(json.dumps(records, indent=2) + "\n")
    (out / "real_scans.md").write_text(markdown(records, settings.default_w))
    print(f"wrote {out}/real_scans.md and real_scans.json")


def register(sub) -> None:
    what = "compare ours with ILVR and DDIM inversion on a simulated or a labelled real cohort"
    p = add_command(sub, "evaluate", what, _cmd_evaluate)
    p.add_argument(
        "--cohort",
        default=None,
        help="simulated manifest.csv (held-out subjects with true counterfactuals), or a labelled real cohort CSV "
        "(controlcg prepare's prepared.csv: its test split, measured without truths)",
    )
    p.add_argument(
        "--real",
        nargs="+",
        default=None,
        metavar="FILE",
        help="real T1s without ground truth: composition toward their own class, change per atlas region",
    )
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--fast", action="store_true", help="tiny setting that proves the pipeline (CI)")
    # --subjects, not only --n: torchrun's own parser takes "--n" for its "--nnodes"/"--nproc-per-node"
    p.add_argument(
        "--subjects", "--n", dest="n", type=int, default=None, help="subjects, half per class (default 8; --fast 2)"
    )
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="sampling seeds (default 0 1 2; --fast 0 1)")
    p.add_argument("--w", type=float, nargs="+", default=None, help="our w sweep (default 0 1 2 4 6 8)")
    p.add_argument(
        "--baselines",
        nargs="*",
        default=None,
        metavar="NAME",
        help="the paper's baselines to run (default all five: ILVR-1 ILVR-2 ILVR-3 DDIM-inv-250 DDIM-inv-500)",
    )
    p.add_argument(
        "--ablations",
        nargs="*",
        default=None,
        metavar="NAME",
        help="variants of ours at the default w (default all: ours-intensity (over the whole w sweep) ours-unpaired "
        "ours-no-blend ours-injection ours-inversion-start)",
    )
    p.add_argument(
        "--axioms",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="composition and reversibility, on the first seed (two more runs per method and subject; default: on)",
    )
    p.add_argument("--default-w", type=float, default=None, help="w at which methods are compared (default 4)")
    p.add_argument("--steps", type=int, default=None, help="DDIM grid of every method (default 20; --fast 4)")
    add_solver_and_spacing(p, whose="the product's with exact arithmetic")
    p.add_argument(
        "--precision", choices=UNET_PRECISIONS, default=None, help="UNet arithmetic of every method (default fp32)"
    )
    p.add_argument(
        "--start-strength",
        type=float,
        default=None,
        help="where ours and its ablations start (default 0.3, the product's; 1: pure noise, the paper's)",
    )
    p.add_argument(
        "--atlas-cohort",
        default=None,
        help="simulated manifest whose subjects make the atlas anchor (the mean true change per direction; default: "
        "the cohort's subjects of the trained anatomies, or all of them, each left out of its own atlas)",
    )
    p.add_argument(
        "--augment-cohort",
        default=None,
        help="training cohort for the augmentation table: a simulated manifest, or with a real --cohort a labelled CSV "
        "(its train split; e.g. the same prepared.csv)",
    )
    p.add_argument("--augment-real", type=int, default=None, help="real training scans (default 8)")
    p.add_argument("--augment-steps", type=int, default=None, help="classifier steps per method (default 300)")
    p.add_argument("--model", default=None, help="diffusion model folder (default: embedded)")
    p.add_argument("--classifier", default=None, help="the explained classifier (default: embedded)")
    p.add_argument("--judge", default=None, help="independent classifier judging the flip (default: embedded judge)")
    p.add_argument(
        "--seen-anatomies",
        nargs="+",
        default=None,
        help="base anatomies the models were trained on (default: their provenance; none recorded: icbm2009a)",
    )
    add_threads(p, "torch CPU threads per process")
    add_overwrite(p)

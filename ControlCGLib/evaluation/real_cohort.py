"""``controlcg evaluate --cohort`` on a labelled real cohort (``prepared.csv`` of ``controlcg prepare``, or any
image,label,subject[,split] CSV), which has no true counterfactuals: what the paper's tables measure without them, and
the truth-free measures of real_scans.py.

Each scan of the ``test`` split (all scans when the CSV has none) gets the product's counterfactual toward the other
class (paired with its own label as the source class, shown as a deformation, sampled as evaluation/measures.py samples
ours) for every w of the sweep and every seed, and is measured:

- Table 1: SSIM and MSE of the counterfactual to its input;
- Table 2: the flip (the counterfactual classified as its target class) by the explained classifier and by the
  independent judge, and the KIDs on the explained classifier's features between the real and the generated sets
  per class (rCN2gAD: real CN against generated AD; a good AD counterfactual is far from real CN and near real AD);
- without truths: the signed mean change per atlas region, the share of voxels darker than any tissue of the scan,
  and the correlation of two seeds' changes;
- intervals over subjects (a subject's scans and seeds averaged first): bootstrap for the means, Wilson for the flips.

- Table 3, given an augmentation cohort (a labelled CSV, e.g. the same prepared.csv): a classifier of the explained
  classifier's configuration trained on its few real ``train`` scans alone ("none") and with ours' counterfactual of
  each of them added ("ours", labelled with its target class), both scored on the evaluated test scans. Its ``val``
  split picks the best weights (without one, the real training scans do; say so when reading the numbers).

Sharded like run.py: torchrun's ranks each measure a slice of the scans (and make a slice of the augmentation's
examples), rank 0 trains the augmentation classifiers and writes the report.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..data.anatomies import load_anatomy
from ..data.cohort import Scan, read_cohort, read_prepared
from ..imaging.geometry import model_grid, resample
from ..imaging.intensity import to_model_range
from ..imaging.native_space import Prepared, prepare
from ..imaging.reading import read_scan
from ..imaging.template import load_template
from ..model.classifier import VolumeClassifier
from ..pipeline import DEFORMATION, show
from ..sampling.sampler import counterfactual
from .measures import EvaluationSettings
from .metrics import bootstrap_ci, kid, mse, ssim
from .real_scans import REPORTED, darker_than_the_scan, region_mean_change, seed_correlation
from .report import wilson
from .subjects import model_tensor

SIMULATED_COLUMNS = {"counterfactual", "counterfactual_label"}


def is_real_cohort(path: str | Path) -> bool:
    """A cohort CSV without the simulated manifest's truth columns."""
    with open(path, newline="") as f:
        columns = set(csv.DictReader(f).fieldnames or ())
    return not SIMULATED_COLUMNS <= columns


def chosen_scans(scans: list[Scan], n: int | None, split: str | None = "test") -> list[Scan]:
    """The ``split`` (all scans without one; ``split=None``: all scans given), classes taking turns, at most ``n``."""
    if split is None:
        test = list(scans)
    else:
        test = [s for s in scans if s.split == split] or [s for s in scans if not s.split] or list(scans)
    by_class: dict[str, list[Scan]] = {}
    for s in test:
        by_class.setdefault(s.label, []).append(s)
    queues = [list(v) for _, v in sorted(by_class.items())]
    out = []
    while any(queues):
        out += [q.pop(0) for q in queues if q]
    return out[:n] if n is not None else out


def _model_input(scan: Scan, config, grid_image: sitk.Image, grid_mask: np.ndarray) -> Prepared:
    if scan.prepared:
        return Prepared.on_model_grid(read_prepared(scan, config.grid), grid_mask, grid_image)
    prepared = prepare(read_scan(scan.image), config.grid, intensity=config.intensity, screen="warn")
    return Prepared.on_model_grid(prepared.model_input, prepared.mask, prepared.grid)


def measure_scan(model, classifier, judge, scan: Scan, settings: EvaluationSettings, context: dict) -> dict:
    """One scan's rows (per seed and w) and its features (input, and counterfactual at the default w, first seed)."""
    config = model.config
    prepared = _model_input(scan, config, context["grid"], context["mask"])
    unit, brain = prepared.model_input, prepared.mask > 0.5
    names = list(config.class_names)
    target = next(c for c in names if c != scan.label)
    explained = VolumeClassifier(classifier)
    judged = VolumeClassifier(judge) if judge is not None else None
    sampling = settings.sampling(config.name)
    y0 = model_tensor(unit, config.intensity)
    rows, changes, generated = [], {}, None
    for seed in settings.seeds:
        began = time.perf_counter()
        result = counterfactual(model, y0, target, settings.scales, sampling, seed=seed, source=scan.label)
        for w in settings.scales:
            cf, _ = show(result, w, prepared, config.intensity, DEFORMATION)
            verdict = explained.verdict(cf)
            row = {
                "subject": scan.subject,
                "scan": str(scan.image),
                "label": scan.label,
                "target": target,
                "seed": seed,
                "w": float(w),
                "ssim": ssim(unit, cf),
                "mse": mse(unit, cf),
                "mean_abs_change": float(np.abs(cf - unit)[brain].mean()),
                "p_target": verdict[target],
                "flip": max(verdict, key=verdict.get) == target,
                "darker_than_scan": darker_than_the_scan(cf, unit, brain),
                "seconds": round(time.perf_counter() - began, 2),
            }
            if judged is not None:
                judge_verdict = judged.verdict(cf)
                row["flip_judge"] = max(judge_verdict, key=judge_verdict.get) == target
            for region, value in region_mean_change(cf - unit, context["labels"], brain).items():
                row[f"change_{region.replace(' ', '_')}"] = value
            rows.append(row)
            if float(w) == float(settings.default_w):
                changes[seed] = cf - unit
                if generated is None:
                    generated = explained.features(cf)
    seeds = list(changes)
    repeat = seed_correlation(changes[seeds[0]], changes[seeds[1]], brain) if len(seeds) > 1 else None
    return {
        "rows": rows,
        "seed_correlation": repeat,
        "real": explained.features(unit),
        "generated": generated,
        "test_volume": to_model_range(explained.on_grid(unit), classifier.config.intensity),
        "label": scan.label,
        "target": target,
        "subject": scan.subject,
    }


def run_real_cohort(
    cohort: str | Path,
    out: str | Path,
    model,
    classifier,
    judge,
    settings: EvaluationSettings,
    *,
    n: int | None = None,
    on_item=None,
    augment_cohort: str | Path | None = None,
    augmentation=None,
) -> dict | None:
    """Measure the chosen scans (sharded over torchrun's ranks), write real_cohort.json, real_cohort.md and rows.csv
    on rank 0 and return the summary there (None on the other ranks). ``augment_cohort`` adds Table 3
    (``augmentation``: evaluation/augmentation.AugmentationSettings)."""
    from ..training.distributed import init_from_env, shard_map, shutdown

    rank, world = init_from_env("cpu")
    began = time.perf_counter()
    config = model.config
    scans = chosen_scans(read_cohort(cohort, config.class_names), n)
    if not scans:
        raise ValueError(f"{cohort} has no scans to evaluate")
    template = load_template()
    grid = model_grid(config.grid, template.t1)
    mask = sitk.GetArrayFromImage(resample(template.mask, grid, None, sitk.sitkNearestNeighbor)) > 0.5
    labels = sitk.GetArrayFromImage(
        resample(load_anatomy("icbm2009a").labels, grid, interpolator=sitk.sitkNearestNeighbor)
    ).astype(int)
    context = {"grid": grid, "mask": mask, "labels": labels}

    def measure(scan):
        measured = measure_scan(model, classifier, judge, scan, settings, context)
        if on_item:
            on_item(scan)
        return measured

    measured = shard_map(scans, measure, rank, world)
    examples = None
    if augment_cohort is not None:
        examples = _augmentation_examples(
            model, classifier, settings, augment_cohort, augmentation, context, rank, world
        )
    if rank != 0:
        shutdown()
        return None
    summary = summarise(measured, settings)
    if examples is not None:
        test = [{"method": "real", "label": m["label"], "volume": m["test_volume"]} for m in measured]
        summary["augmentation"] = _augmentation_table(classifier.config, examples, test, augmentation)
    summary["settings"] = {
        "cohort": str(cohort),
        "scans": len(scans),
        "scales": list(settings.scales),
        "default_w": settings.default_w,
        "seeds": list(settings.seeds),
        "processes": world,
        "seconds": round(time.perf_counter() - began, 1),
        "kid_features": "explained classifier, class_layers.flatten (globally pooled last dense block)",
    }
    write_real_cohort_report(Path(out), summary, [r for m in measured for r in m["rows"]])
    shutdown()
    return summary


def _augmentation_examples(model, classifier, settings, cohort, aug, context, rank, world) -> list[dict]:
    """Table 3's examples, sharded: each real training and validation scan of ``cohort`` on the classifier's grid,
    and ours' counterfactual of each training scan toward its other class, labelled with that class."""
    from ..training.distributed import shard_map
    from .augmentation import AugmentationSettings

    aug = aug or AugmentationSettings()
    config = model.config
    scans = read_cohort(cohort, config.class_names)
    train = chosen_scans([s for s in scans if s.split == "train"] or scans, aug.real, split=None)
    val = [s for s in scans if s.split == "val"]
    explained = VolumeClassifier(classifier)
    sampling = settings.sampling(config.name)
    jobs = [("real", s) for s in train] + [("val", s) for s in val] + [("ours", s) for s in train]

    def make(job):
        role, scan = job
        prepared = _model_input(scan, config, context["grid"], context["mask"])
        unit, label = prepared.model_input, scan.label
        if role == "ours":
            label = next(c for c in config.class_names if c != scan.label)
            y0 = model_tensor(unit, config.intensity)
            w = settings.default_w
            result = counterfactual(model, y0, label, (w,), sampling, seed=aug.seed, source=scan.label)
            unit, _ = show(result, w, prepared, config.intensity, DEFORMATION)
        volume = to_model_range(explained.on_grid(unit), classifier.config.intensity)
        return {"role": role, "method": "real" if role != "ours" else "ours", "label": label, "volume": volume}

    return shard_map(jobs, make, rank, world)


def _augmentation_table(classifier_config, examples: list[dict], test: list[dict], aug) -> dict:
    import tempfile

    from .augmentation import AugmentationSettings, train_and_test, training_pairs

    aug = aug or AugmentationSettings()
    real = [e for e in examples if e["role"] == "real"]
    val = [e for e in examples if e["role"] == "val"] or real
    detail = {}
    with tempfile.TemporaryDirectory() as scratch:  # the augmentation classifiers are not kept
        for name in ("none", "ours"):
            generated = [e for e in examples if e["role"] == name]
            val_set = training_pairs(val, classifier_config.class_names)
            detail[name] = train_and_test(classifier_config, real + generated, val_set, test, aug, Path(scratch) / name)
            detail[name]["validation"] = "val split" if any(e["role"] == "val" for e in examples) else "train scans"
    return detail


def _per_subject(rows: list[dict], key: str) -> list[float]:
    by: dict[str, list[float]] = {}
    for r in rows:
        if r.get(key) is not None:
            by.setdefault(r["subject"], []).append(float(r[key]))
    return [float(np.mean(v)) for v in by.values()]


def summarise(measured: list[dict], settings: EvaluationSettings) -> dict:
    rows = [r for m in measured for r in m["rows"]]
    per_w = {}
    for w in settings.scales:
        at = [r for r in rows if r["w"] == float(w)]
        entry = {}
        for key in ("ssim", "mse", "mean_abs_change", "p_target", "darker_than_scan"):
            values = _per_subject(at, key)
            entry[key] = round(float(np.mean(values)), 5) if values else None
            entry[f"{key}_ci"] = bootstrap_ci(values)
        for key in ("flip", "flip_judge"):
            hits = [bool(r[key]) for r in at if key in r]
            entry[key] = round(float(np.mean(hits)), 4) if hits else None
            entry[f"{key}_ci"] = wilson(sum(hits), len(hits)) if hits else None
        regions = {}
        for region in REPORTED:
            values = _per_subject(at, f"change_{region.replace(' ', '_')}")
            regions[region] = {"mean": round(float(np.mean(values)), 5) if values else None, "ci": bootstrap_ci(values)}
        entry["regional_change"] = regions
        per_w[f"{float(w):g}"] = entry
    kids = {}
    classes = sorted({m["label"] for m in measured})
    for real_class in classes:
        real = [m["real"] for m in measured if m["label"] == real_class]
        for generated_class in classes:
            made = [m["generated"] for m in measured if m["target"] == generated_class]
            name = f"r{real_class}2g{generated_class}"
            kids[name] = kid(real, made) if len(real) >= 2 and len(made) >= 2 else None
    repeats = [m["seed_correlation"] for m in measured if m["seed_correlation"] is not None]
    return {
        "per_w": per_w,
        "kid": kids,
        "seed_correlation": round(float(np.mean(repeats)), 4) if repeats else None,
        "seed_correlation_ci": bootstrap_ci(repeats),
        "subjects": len({m["subject"] for m in measured}),
        "by_class": {c: sum(m["label"] == c for m in measured) for c in classes},
    }


def write_real_cohort_report(out: Path, summary: dict, rows: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "real_cohort.json").write_text(json.dumps(summary, indent=1, default=float) + "\n", encoding="utf-8")
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "rows.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    (out / "real_cohort.md").write_text(markdown(summary), encoding="utf-8")


def _cell(value, ci=None) -> str:
    if value is None:
        return "–"
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text + (f" [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else "")


def markdown(summary: dict) -> str:
    s = summary["settings"]
    lines = [
        "# Counterfactuals of a real cohort (no true counterfactuals)",
        "",
        f"{s['scans']} scans of {summary['subjects']} subjects ({summary['by_class']}) from {s['cohort']}; "
        f"seeds {s['seeds']}; {s['seconds']} s on {s['processes']} process(es). Means over subjects with 95 % "
        "bootstrap intervals over subjects; flips with Wilson intervals.",
        "",
        "## Table 1: similarity to the input, and the flip (Table 2)",
        "",
        "| w | SSIM | MSE | mean abs change | flip (explained) | flip (judge) | darker than the scan |",
        "|---|---|---|---|---|---|---|",
    ]
    for w, e in summary["per_w"].items():
        lines.append(
            f"| {w} | {_cell(e['ssim'], e['ssim_ci'])} | {_cell(e['mse'], e['mse_ci'])} | "
            f"{_cell(e['mean_abs_change'])} | {_cell(e['flip'], e['flip_ci'])} | "
            f"{_cell(e['flip_judge'], e['flip_judge_ci'])} | {_cell(e['darker_than_scan'])} |"
        )
    lines += ["", f"## Table 2: KID between real and generated sets (default w = {s['default_w']:g})", ""]
    lines += ["| set pair | KID |", "|---|---|"]
    lines += [f"| {k} | {_cell(v)} |" for k, v in summary["kid"].items()]
    lines += ["", f"## Signed mean change per region (w = {s['default_w']:g}; negative: darker)", ""]
    w = f"{float(s['default_w']):g}"
    if w in summary["per_w"]:
        lines += ["| region | mean change |", "|---|---|"]
        for region, v in summary["per_w"][w]["regional_change"].items():
            lines.append(f"| {region} | {_cell(v['mean'], v['ci'])} |")
    lines += ["", f"Seed consistency (correlation of two seeds' changes): {_cell(summary['seed_correlation'])}", ""]
    if "augmentation" in summary:
        lines += ["## Table 3: a classifier trained with ours' counterfactuals added", ""]
        lines += ["| extra data | accuracy | balanced accuracy | AUC | real / generated training scans | validation |"]
        lines += ["|---|---|---|---|---|---|"]
        for name, d in summary["augmentation"].items():
            lines.append(
                f"| {name} | {_cell(d['accuracy'])} | {_cell(d['balanced_accuracy'])} | {_cell(d['auc'])} | "
                f"{d['train_real']} / {d['train_generated']} | {d['validation']} |"
            )
        lines.append("")
    else:
        lines += ["Table 3 (a classifier trained with generated images added) needs --augment-cohort.", ""]
    return "\n".join(lines)

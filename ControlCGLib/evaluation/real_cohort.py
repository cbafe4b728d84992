"""``controlcg evaluate --cohort`` on a labelled real cohort (``prepared.csv`` of ``controlcg prepare``, or any
image,label,subject[,split] CSV), which has no true counterfactuals: the paper's tables for every method, without
them, and the truth-free measures of real_scans.py.

Each scan of the ``test`` split (all scans when the CSV has none) gets every method's counterfactual toward the other
class (evaluation/measures.py's methods: ours -- paired with the scan's label as the source class, shown as a
deformation, exact sampling -- over the w sweep; its ablations and the paper's baselines, ILVR and DDIM inversion, at
the default w) for every seed, and is measured:

- Table 1: SSIM and MSE of the counterfactual to its input;
- Table 2: the flip (the counterfactual classified as its target class) by the explained classifier and by the
  independent judge, and the KIDs on the explained classifier's features between the real and the generated sets
  per class (rCN2gAD: real CN against generated AD; a good AD counterfactual is far from real CN and near real AD);
- without truths: per direction, the regional volume change read with one intensity ruler (volumes.py, on the atlas
  regions the registration brings onto the model grid) and the signed mean change per region; the share of voxels
  darker than any tissue of the scan; the correlation of two seeds' changes; composition and reversibility on the
  first seed;
- two anchors at the default w, measured like any method: ``identity`` (the input unchanged: the floor) and
  ``ours-atlas`` (ours' mean change over the *other* evaluated scans of the same direction, added to this scan: what
  a patient-blind change scores). With no truth there is no ceiling; a method that does not beat ``ours-atlas`` on the
  flip and the KIDs shows the class, not the patient;
- intervals over subjects (a subject's scans and seeds averaged first): bootstrap for the means and the flips.

- Table 3, given an augmentation cohort (a labelled CSV, e.g. the same prepared.csv): a classifier of the explained
  classifier's configuration trained on its few real ``train`` scans alone ("none") and with each method's
  counterfactual of each of them added (labelled with its target class), all scored on the evaluated test scans. Its
  ``val`` split picks the best weights (without one, the real training scans do; say so when reading the numbers).

Sharded like run.py: torchrun's ranks each measure a slice of the scans (and make a slice of the augmentation's
examples), rank 0 measures the anchors, trains the augmentation classifiers and writes the report.
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
from .anchors import Anchors, TrueChange, with_change
from .measures import IDENTITY, OURS, EvaluationSettings, axioms, each_counterfactual
from .metrics import bootstrap_ci, kid, mse, ssim
from .real_scans import REPORTED, darker_than_the_scan, region_mean_change, seed_correlation
from .run import write_montages
from .subjects import model_tensor
from .volumes import VolumeRuler

SIMULATED_COLUMNS = {"counterfactual", "counterfactual_label"}
#: The patient-blind anchor: ours' mean change over the other evaluated scans of the same direction.
OURS_ATLAS = "ours-atlas"
ANCHORS = (IDENTITY, OURS_ATLAS)
#: The volumes of the report (volumes.VOLUME_REGIONS) and the signed intensity change per region (REPORTED).
VOLUMES = ("hippocampi", "ventricles", "temporal cortex", "parietal cortex", "brain")


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


def _other_class(config, label: str) -> str:
    return next(c for c in config.class_names if c != label)


class ScanMeasures:
    """The measures of one scan's counterfactuals, each read with the same ruler: the classifiers' verdicts, similarity
    to the input, impossible intensities, regional volumes (None where the ruler cannot read this scan) and the signed
    change per region."""

    def __init__(self, scan: Scan, target: str, unit: np.ndarray, brain: np.ndarray, labels, explained, judged):
        self.scan, self.target, self.unit, self.brain, self.labels = scan, target, unit, brain, labels
        self.explained, self.judged = explained, judged
        try:
            self.ruler = VolumeRuler(unit, labels, brain)
            self.before = self.ruler.volumes(unit)
        except ValueError:
            self.ruler = None

    def row(self, method: str, seed: int | None, w: float, cf: np.ndarray, seconds: float) -> dict:
        verdict = self.explained.verdict(cf)
        row = {
            "subject": self.scan.subject,
            "scan": str(self.scan.image),
            "label": self.scan.label,
            "target": self.target,
            "direction": f"{self.scan.label}->{self.target}",
            "method": method,
            "seed": seed,
            "w": float(w),
            "ssim": ssim(self.unit, cf),
            "mse": mse(self.unit, cf),
            "mean_abs_change": float(np.abs(cf - self.unit)[self.brain].mean()),
            "p_target": verdict[self.target],
            "flip": max(verdict, key=verdict.get) == self.target,
            "flip_judge": None,
            "darker_than_scan": darker_than_the_scan(cf, self.unit, self.brain),
            "composition_mse": None,
            "reversibility_mse": None,
            "seconds": round(seconds, 2),
        }
        if self.judged is not None:
            judge_verdict = self.judged.verdict(cf)
            row["flip_judge"] = max(judge_verdict, key=judge_verdict.get) == self.target
        changed = self.ruler.change_percent(cf, self.before) if self.ruler is not None else {}
        for region in VOLUMES:
            row[f"dv_{region.replace(' ', '_')}"] = changed.get(region)
        for region, value in region_mean_change(cf - self.unit, self.labels, self.brain).items():
            row[f"change_{region.replace(' ', '_')}"] = value
        return row


def measure_scan(
    model, classifier, judge, scan: Scan, settings: EvaluationSettings, context: dict, images: dict | None = None
) -> dict:
    """One scan's rows (per method, seed and w) and what the summary and the anchors need: the explained classifier's
    features of the input and of each method's counterfactual at the default w (first seed), and the input, its brain
    and ours' change there. ``images``, when given, receives the input and the first seed's counterfactuals
    ((method, w) -> model-grid array) for the montages."""
    config = model.config
    prepared = _model_input(scan, config, context["grid"], context["mask"])
    unit, brain = prepared.model_input, prepared.mask > 0.5
    target = _other_class(config, scan.label)
    explained = VolumeClassifier(classifier)
    judged = VolumeClassifier(judge) if judge is not None else None
    measures = ScanMeasures(scan, target, unit, brain, context["labels"], explained, judged)
    sampling = settings.sampling(config.name)
    default_w = float(settings.default_w)
    rows, changes, generated = [], {}, {}
    if images is not None:
        images["input"] = unit
    for seed in settings.seeds:
        for method, w, cf, seconds in each_counterfactual(
            settings, model, prepared, scan.label, target, sampling, seed
        ):
            row = measures.row(method.name, seed, w, cf, seconds)
            if images is not None and seed == settings.seeds[0]:
                images[(method.name, w)] = cf
            if w == default_w:
                changes.setdefault(method.name, []).append(cf - unit)
                if method.name not in generated:
                    generated[method.name] = explained.features(cf)
                if settings.axioms and seed == settings.axioms_seed:
                    row.update(axioms(method, model, prepared, cf, scan.label, target, w, sampling, seed))
            rows.append(row)
    repeats = {m: seed_correlation(c[0], c[1], brain) if len(c) > 1 else None for m, c in changes.items()}
    return {
        "rows": rows,
        "seed_correlation": repeats,
        "real": explained.features(unit),
        "generated": generated,
        "test_volume": to_model_range(explained.on_grid(unit), classifier.config.intensity),
        "label": scan.label,
        "target": target,
        "subject": scan.subject,
        "scan": scan,
        "unit": unit,
        "brain": brain,
        "ours_change": changes[OURS][0] * brain if OURS in changes else None,
        "images": images,
    }


def measure_anchors(measured: list[dict], classifier, judge, settings: EvaluationSettings, labels) -> None:
    """Add the anchors' rows and features to each scan's entry: ``identity`` (the input as it is) and ``ours-atlas``
    (the mean of ours' changes of the other subjects of the same direction, added to this scan; none when the
    direction has no other subject)."""
    explained = VolumeClassifier(classifier)
    judged = VolumeClassifier(judge) if judge is not None else None
    w = float(settings.default_w)
    # anchors.py's atlas mechanism (leave-one-subject-out mean per direction), on ours' changes instead of true ones
    pool = [
        TrueChange(m["subject"], f"{m['label']}->{m['target']}", m["unit"], m["brain"], m["ours_change"])
        for m in measured
        if m["ours_change"] is not None
    ]
    atlas = Anchors(pool, [])
    for m in measured:
        unit, brain = m["unit"], m["brain"]
        measures = ScanMeasures(m["scan"], m["target"], unit, brain, labels, explained, judged)
        shown = {IDENTITY: unit}
        others = atlas.atlas(m["subject"], f"{m['label']}->{m['target']}")
        if others is not None:
            shown[OURS_ATLAS] = with_change(unit, others, brain)
        for name, cf in shown.items():
            row = measures.row(name, None, w, cf, 0.0)
            if name == IDENTITY and settings.axioms:  # toward its own class and back, the input stays the input
                row["composition_mse"] = row["reversibility_mse"] = 0.0
            m["rows"].append(row)
            m["generated"][name] = explained.features(cf)
            if m.get("images") is not None:
                m["images"][(name, w)] = cf


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
        images = {} if scan is scans[0] else None  # the montages' scan
        measured = measure_scan(model, classifier, judge, scan, settings, context, images)
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
    if settings.anchors:
        measure_anchors(measured, classifier, judge, settings, labels)
    summary = summarise(measured, settings)
    if examples is not None:
        test = [{"method": "real", "label": m["label"], "volume": m["test_volume"]} for m in measured]
        summary["augmentation"] = _augmentation_table(classifier.config, examples, test, settings, augmentation)
    summary["settings"] = {
        "cohort": str(cohort),
        "scans": len(scans),
        "methods": [m.name for m in settings.methods()],
        "anchors": list(ANCHORS) if settings.anchors else [],
        "scales": list(settings.scales),
        "default_w": settings.default_w,
        "seeds": list(settings.seeds),
        "axioms": settings.axioms,
        "steps": settings.sampling(config.name).steps,
        "processes": world,
        "seconds": round(time.perf_counter() - began, 1),
        "kid_features": "explained classifier, class_layers.flatten (globally pooled last dense block)",
        "volume_regions": "icbm2009a atlas labels on the model grid (the registration's MNI space)",
    }
    write_real_cohort_report(Path(out), summary, [r for m in measured for r in m["rows"]])
    first = measured[0]
    methods = [*(m.name for m in settings.methods()), *ANCHORS]
    title = f"{first['subject']}: {first['label']} -> {first['target']}, no truth"
    write_montages(Path(out), first["images"], {f"input ({first['label']})": first["unit"]}, title, methods, settings)
    shutdown()
    return summary


def _augmentation_examples(model, classifier, settings, cohort, aug, context, rank, world) -> list[dict]:
    """Table 3's examples, sharded: each real training and validation scan of ``cohort`` on the classifier's grid,
    and each method's counterfactual of each training scan toward its other class, labelled with that class."""
    from ..pipeline import show
    from ..sampling.baselines import run_method
    from ..training.distributed import shard_map
    from .augmentation import AugmentationSettings

    aug = aug or AugmentationSettings()
    config = model.config
    scans = read_cohort(cohort, config.class_names)
    train = chosen_scans([s for s in scans if s.split == "train"] or scans, aug.real, split=None)
    val = [s for s in scans if s.split == "val"]
    explained, intensity = VolumeClassifier(classifier), classifier.config.intensity
    sampling = settings.sampling(config.name)
    methods = settings.methods()
    jobs = [("real", s) for s in train] + [("val", s) for s in val]

    def make(job) -> list[dict]:
        """The scan as it is and, for a training scan, each method's counterfactual of it: one preparation."""
        role, scan = job
        prepared = _model_input(scan, config, context["grid"], context["mask"])
        examples = [(role, "real", scan.label, prepared.model_input)]
        if role == "real":
            target, w = _other_class(config, scan.label), settings.default_w
            y0 = model_tensor(prepared.model_input, config.intensity)
            for method in methods:
                result = run_method(method, model, y0, scan.label, target, (w,), sampling, seed=aug.seed)
                cf, _ = show(result, w, prepared, config.intensity, method.change)
                examples.append(("generated", method.name, target, cf))
        return [
            {"role": r, "method": m, "label": label, "volume": to_model_range(explained.on_grid(unit), intensity)}
            for r, m, label, unit in examples
        ]

    return [e for part in shard_map(jobs, make, rank, world) for e in part]


def _augmentation_table(classifier_config, examples: list[dict], test: list[dict], settings, aug) -> dict:
    """One classifier with no extra data and one per method, trained alike on the real examples plus that method's."""
    import tempfile

    from .augmentation import AugmentationSettings, train_and_test, training_pairs

    aug = aug or AugmentationSettings()
    real = [e for e in examples if e["role"] == "real"]
    has_val = any(e["role"] == "val" for e in examples)
    val_set = training_pairs([e for e in examples if e["role"] == "val"] or real, classifier_config.class_names)
    detail = {}
    with tempfile.TemporaryDirectory() as scratch:  # the augmentation classifiers are not kept
        for name in ["none", *(m.name for m in settings.methods())]:
            generated = [e for e in examples if e["role"] == "generated" and e["method"] == name]
            detail[name] = train_and_test(classifier_config, real + generated, val_set, test, aug, Path(scratch) / name)
            detail[name]["validation"] = "val split" if has_val else "train scans"
    return detail


def _per_subject(rows: list[dict], key: str) -> list[float]:
    by: dict[str, list[float]] = {}
    for r in rows:
        if r.get(key) is not None:
            by.setdefault(r["subject"], []).append(float(r[key]))
    return [float(np.mean(v)) for v in by.values()]


def _mean_ci(rows: list[dict], key: str) -> dict:
    values = _per_subject(rows, key)
    return {"mean": round(float(np.mean(values)), 5) if values else None, "ci": bootstrap_ci(values), "n": len(values)}


SCALARS = ("ssim", "mse", "mean_abs_change", "p_target", "flip", "flip_judge", "darker_than_scan")
AXIOMS = ("composition_mse", "reversibility_mse")


def summarise(measured: list[dict], settings: EvaluationSettings) -> dict:
    """Per method and w: the means over subjects with their intervals; per direction the regional volume and
    intensity changes; at the default w the KIDs, the seed consistency and the two axioms."""
    rows = [r for m in measured for r in m["rows"]]
    methods: dict[str, dict] = {}
    for name in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == name]
        per_w = {}
        for w in dict.fromkeys(r["w"] for r in mine):
            at = [r for r in mine if r["w"] == w]
            entry = {key: _mean_ci(at, key) for key in SCALARS}
            entry["by_direction"] = {}
            for direction in sorted({r["direction"] for r in at}):
                these = [r for r in at if r["direction"] == direction]
                entry["by_direction"][direction] = {
                    "volume_change_percent": {v: _mean_ci(these, f"dv_{v.replace(' ', '_')}") for v in VOLUMES},
                    "mean_change": {v: _mean_ci(these, f"change_{v.replace(' ', '_')}") for v in REPORTED},
                }
            per_w[f"{w:g}"] = entry
        default = [r for r in mine if r["w"] == float(settings.default_w)]
        repeats = [m["seed_correlation"].get(name) for m in measured if m["seed_correlation"].get(name) is not None]
        methods[name] = {
            "per_w": per_w,
            "kid": _kids(measured, name),
            "seed_correlation": {
                "mean": round(float(np.mean(repeats)), 4) if repeats else None,
                "ci": bootstrap_ci(repeats),
                "n": len(repeats),
            },
            **{key: _mean_ci(default, key) for key in AXIOMS},
        }
    classes = sorted({m["label"] for m in measured})
    return {
        "methods": methods,
        "subjects": len({m["subject"] for m in measured}),
        "by_class": {c: sum(m["label"] == c for m in measured) for c in classes},
    }


def _kids(measured: list[dict], method: str) -> dict:
    """KID between the real scans of each class and the method's counterfactuals made toward each class."""
    classes = sorted({m["label"] for m in measured})
    out = {}
    for real_class in classes:
        real = [m["real"] for m in measured if m["label"] == real_class]
        for generated_class in classes:
            made = [
                m["generated"][method] for m in measured if m["target"] == generated_class and method in m["generated"]
            ]
            name = f"r{real_class}2g{generated_class}"
            out[name] = kid(real, made) if len(real) >= 2 and len(made) >= 2 else None
    return out


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
    if isinstance(value, dict):
        value, ci = value.get("mean"), value.get("ci")
    if value is None:
        return "–"
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text + (f" [{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "")


def _regional_table(methods: dict, w: str, measure: str, regions) -> list[str]:
    """One row per method and direction, one column per region."""
    lines = ["| method | direction | " + " | ".join(regions) + " |", "|---|---|" + "---|" * len(regions)]
    for name, m in methods.items():
        for direction, d in (m["per_w"].get(w) or {}).get("by_direction", {}).items():
            lines.append(f"| {name} | {direction} | " + " | ".join(_cell(d[measure][v]) for v in regions) + " |")
    return lines


def markdown(summary: dict) -> str:
    s = summary["settings"]
    methods = summary["methods"]
    w = f"{float(s['default_w']):g}"
    lines = [
        "# Counterfactuals of a labelled real cohort (no true counterfactuals)",
        "",
        f"{s['scans']} scans of {summary['subjects']} subjects ({summary['by_class']}) from {s['cohort']}; "
        f"seeds {s['seeds']}; {s.get('steps', '?')} steps; {s['seconds']} s on {s['processes']} process(es). "
        "Means over subjects (a subject's scans and seeds averaged first) with 95 % bootstrap intervals over "
        "subjects. Anchors: identity (the input unchanged: the floor) and ours-atlas (ours' mean change over the "
        "other subjects of the same direction, added to the scan: a patient-blind change). No ceiling: no truth.",
        "",
        "## Table 1: similarity to the input and the flip over w",
        "",
        "| method | w | SSIM | MSE | mean abs change | flip (explained) | flip (judge) | darker than the scan |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in methods.items():
        for at, e in m["per_w"].items():
            lines.append(
                f"| {name} | {at} | {_cell(e['ssim'])} | {_cell(e['mse'])} | {_cell(e['mean_abs_change'])} | "
                f"{_cell(e['flip'])} | {_cell(e['flip_judge'])} | {_cell(e['darker_than_scan'])} |"
            )
    kid_names = list(next(iter(methods.values()))["kid"]) if methods else []
    lines += ["", f"## Table 2: every method at w = {w}: the flip and the KIDs to the real sets", ""]
    lines += [
        "rXgY: real X scans against counterfactuals made toward Y (lower: closer). A good counterfactual toward Y is "
        "near real Y and far from real X.",
        "",
        "| method | flip (explained) | flip (judge) | " + " | ".join(f"KID {k}" for k in kid_names) + " | seed r | "
        "composition MSE | reversibility MSE |",
        "|---|---|---|" + "---|" * len(kid_names) + "---|---|---|",
    ]
    for name, m in methods.items():
        e = m["per_w"].get(w)
        if e is None:
            continue
        kids = " | ".join(_cell(m["kid"][k]) for k in kid_names)
        lines.append(
            f"| {name} | {_cell(e['flip'])} | {_cell(e['flip_judge'])} | {kids} | {_cell(m['seed_correlation'])} | "
            f"{_cell(m['composition_mse'])} | {_cell(m['reversibility_mse'])} |"
        )
    lines += ["", f"## Regional volume change at w = {w} (%, read with one intensity ruler; volumes.py)", ""]
    lines += _regional_table(methods, w, "volume_change_percent", VOLUMES)
    lines += ["", f"## Signed mean intensity change per region at w = {w} (model range; negative: darker)", ""]
    lines += _regional_table(methods, w, "mean_change", list(REPORTED))
    lines.append("")
    if "augmentation" in summary:
        lines += ["## Table 3: a classifier trained with each method's counterfactuals added", ""]
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

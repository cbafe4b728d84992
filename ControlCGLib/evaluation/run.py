"""``controlcg evaluate``: every method on a simulated cohort with ground truth, the augmentation experiment, and the
report folder -- sharded over the processes torchrun starts (each rank a slice of the subjects and of the generated
training images; rank 0 merges, trains the augmentation classifiers and writes the report).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .measures import (
    OURS,
    AugmentationSettings,
    EvaluationSettings,
    SimulatedSubject,
    generated_example,
    measure_subject,
    read_simulated,
    real_example,
    real_features,
    train_and_test,
    training_pairs,
)

FAST = EvaluationSettings(scales=(0.0, 4.0), default_w=4.0, steps=4, seeds=(0, 1), axioms_seed=0)
FAST_AUGMENTATION = AugmentationSettings(real=4, steps=8, batch_size=4)


def balanced(subjects: Sequence[SimulatedSubject], n: int | None) -> list[SimulatedSubject]:
    """The first ``n`` subjects of the list, as evenly split between the classes as the list allows."""
    if n is None:
        return list(subjects)
    by_class = {c: [s for s in subjects if s.label == c] for c in sorted({s.label for s in subjects})}
    share = {c: n // len(by_class) + (i < n % len(by_class)) for i, c in enumerate(by_class)}
    return [s for c, ss in by_class.items() for s in ss[: share[c]]]


def run_evaluation(
    cohort: str | Path,
    out: str | Path,
    model,
    classifier,
    judge,
    settings: EvaluationSettings,
    *,
    n: int | None = None,
    augment_cohort: str | Path | None = None,
    augmentation: AugmentationSettings | None = None,
    on_item=None,
) -> dict | None:
    """Run everything; returns the summary on rank 0 (None on the other ranks)."""
    from ..training.distributed import init_from_env, shard_map, shutdown

    rank, world = init_from_env("cpu")
    began = time.perf_counter()
    cohort_subjects = read_simulated(cohort)
    subjects = balanced(cohort_subjects, n)
    items = [(s, seed) for seed in settings.seeds for s in subjects]

    def measure(item):
        subject, seed = item
        images = {} if (subject is subjects[0] and seed == settings.axioms_seed) else None
        rows = measure_subject(model, classifier, judge, subject, settings, seed, images=images)
        if on_item:
            on_item(item)
        return rows, images

    measured = shard_map(items, measure, rank, world)
    rows = [r for part, _ in measured for r in part]
    images = next(im for _, im in measured if im is not None)

    extra = None
    if augment_cohort is not None:
        extra = _augmentation_examples(model, classifier, settings, augment_cohort, augmentation, rank, world)
    if rank != 0:
        shutdown()
        return None

    real = real_features(classifier, cohort_subjects)
    summary_settings = {
        **{k: v for k, v in dataclasses.asdict(settings).items() if k != "baselines"},
        "methods": [m.name for m in settings.methods()],
        "subjects": len(subjects),
        "real_reference_subjects": len(cohort_subjects),
        "cohort": str(cohort),
        "processes": world,
        "fid_features": "explained classifier, class_layers.flatten (globally pooled last dense block)",
    }
    from .report import summarise_methods, write_report

    summary = summarise_methods(rows, real, settings.default_w, OURS, summary_settings)
    if extra is not None:
        grid, intensity = classifier.config.grid, classifier.config.intensity
        extra["test"] = [real_example(s, grid, intensity) for s in cohort_subjects]  # the held-out cohort
        with tempfile.TemporaryDirectory() as scratch:  # the augmentation classifiers are not kept
            detail = _augment(classifier.config, extra, settings, augmentation, Path(scratch))
        summary["augmentation"] = {m: d["accuracy"] for m, d in detail.items()}
        summary["augmentation_detail"] = detail
    summary["settings"]["seconds"] = round(time.perf_counter() - began, 1)
    write_report(out, summary, rows)
    _montages(Path(out), images, subjects[0], settings)
    shutdown()
    return summary


def _augmentation_examples(model, classifier, settings, augment_cohort, aug, rank, world) -> dict:
    from ..data.cohort import read_cohort, split_by_subject
    from ..training.distributed import shard_map

    aug = aug or AugmentationSettings()
    simulated = {s.subject: s for s in read_simulated(augment_cohort)}
    splits = split_by_subject(read_cohort(augment_cohort, classifier.config.class_names), seed=aug.seed)
    train = balanced([simulated[s.subject] for s in splits["train"]], aug.real)
    val = [simulated[s.subject] for s in splits["val"]]
    grid, intensity = classifier.config.grid, classifier.config.intensity
    methods = settings.methods()
    jobs = [("real", s) for s in train] + [("val", s) for s in val] + [(m, s) for m in methods for s in train]

    def make(job):
        what, subject = job
        if isinstance(what, str):
            return {**real_example(subject, grid, intensity), "role": what}
        return {**generated_example(model, what, subject, settings.default_w, settings.steps, aug.seed, intensity)}

    examples = shard_map(jobs, make, rank, world)
    return {"examples": examples, "settings": aug}


def _augment(classifier_config, extra: dict, settings, aug, out: Path) -> dict:
    aug = aug or AugmentationSettings()
    examples = extra["examples"]
    real = [e for e in examples if e.get("role") == "real"]
    val = training_pairs([e for e in examples if e.get("role") == "val"], classifier_config.class_names)
    test = extra["test"]
    detail = {}
    for name in ["none", *[m.name for m in settings.methods()]]:
        generated = [e for e in examples if e.get("method") == name and "role" not in e]
        detail[name] = train_and_test(classifier_config, real + generated, val, test, aug, out / name)
    return detail


def _montages(out: Path, images: dict, subject: SimulatedSubject, settings: EvaluationSettings) -> None:
    from ..figures import montage

    base = {f"input ({subject.label})": images["input"], f"true {subject.target}": images["truth"]}
    ours = {f"ours w={w:g}": images[(OURS, float(w))] for w in settings.scales if (OURS, float(w)) in images}
    methods = {
        f"{m.name}": images[(m.name, float(settings.default_w))]
        for m in settings.methods()
        if (m.name, float(settings.default_w)) in images
    }
    for name, columns in (("montage_w.png", {**base, **ours}), ("montage_methods.png", {**base, **methods})):
        saliency = {k: v - images["input"] for k, v in columns.items() if not k.startswith("input")}
        montage(
            out / name,
            columns,
            saliency,
            title=f"{subject.subject}: {subject.label} -> {subject.target} ({name[8:-4]})",
        )

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

from .anchors import build_anchors
from .augmentation import AugmentationSettings, augmentation_examples, augmentation_table
from .measures import OURS, EvaluationSettings, measure_subject, real_features
from .subjects import SimulatedSubject, balanced, read_simulated, real_example

FAST = EvaluationSettings(scales=(0.0, 4.0), default_w=4.0, steps=4, seeds=(0, 1), axioms_seed=0)


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
    seen_anatomies: Sequence[str] | None = None,
    atlas_cohort: str | Path | None = None,
) -> dict | None:
    """Run everything; returns the summary on rank 0 (None on the other ranks). ``seen_anatomies``: the base
    anatomies the models were trained on (None: :func:`trained_anatomies` of the model and classifier);
    ``atlas_cohort``: a simulated manifest whose subjects make the atlas anchor (None: this cohort's, see
    :func:`atlas_pool`)."""
    from ..training.distributed import init_from_env, shard_map, shutdown

    rank, world = init_from_env("cpu")
    began = time.perf_counter()
    cohort_subjects = read_simulated(cohort)
    subjects = balanced(cohort_subjects, n)
    items = [(s, seed) for seed in settings.seeds for s in subjects]
    seen = list(seen_anatomies) if seen_anatomies is not None else trained_anatomies(model, classifier)
    pool = atlas_pool(read_simulated(atlas_cohort) if atlas_cohort else cohort_subjects, seen)
    anchors = build_anchors(subjects, pool, model.config.grid, model.config.intensity) if settings.anchors else None

    def measure(item):
        subject, seed = item
        images = {} if (subject is subjects[0] and seed == settings.axioms_seed) else None
        rows = measure_subject(model, classifier, judge, subject, settings, seed, images=images, anchors=anchors)
        if on_item:
            on_item(item)
        return rows, images

    measured = shard_map(items, measure, rank, world)
    rows = [r for part, _ in measured for r in part]
    images = next(im for _, im in measured if im is not None)

    extra = None
    if augment_cohort is not None:
        extra = augmentation_examples(model, classifier, settings, augment_cohort, augmentation, rank, world)
    if rank != 0:
        shutdown()
        return None

    real = real_features(classifier, cohort_subjects)
    sampling = settings.sampling(model.config.name)  # what ours ran, every setting resolved
    summary_settings = {
        **{k: v for k, v in dataclasses.asdict(settings).items() if k != "baselines"},
        **{k: getattr(sampling, k) for k in ("steps", "solver", "spacing", "start_strength", "precision", "kv_stride")},
        "injection": sampling.injection is not None,
        "blend": sampling.blend is not None,
        "methods": [m.name for m in settings.methods()],
        "subjects": len(subjects),
        "real_reference_subjects": len(cohort_subjects),
        "cohort": str(cohort),
        "processes": world,
        "kid_features": "explained classifier, class_layers.flatten (globally pooled last dense block)",
        "atlas_pool": {
            "cohort": str(atlas_cohort or cohort),
            "subjects": {d: anchors.pool_size(d) for d in ("CN->AD", "AD->CN")} if anchors else {},
        },
    }
    from .report import summarise_methods, write_report

    summary = summarise_methods(rows, real, settings.default_w, OURS, summary_settings, seen)
    if extra is not None:
        grid, intensity = classifier.config.grid, classifier.config.intensity
        extra["test"] = [real_example(s, grid, intensity) for s in cohort_subjects]  # the held-out cohort
        with tempfile.TemporaryDirectory() as scratch:  # the augmentation classifiers are not kept
            detail = augmentation_table(classifier.config, extra, settings, augmentation, Path(scratch))
        summary["augmentation"] = {m: d["accuracy"] for m, d in detail.items()}
        summary["augmentation_detail"] = detail
    summary["settings"]["seconds"] = round(time.perf_counter() - began, 1)
    write_report(out, summary, rows)
    _montages(Path(out), images, subjects[0], settings)
    shutdown()
    return summary


def atlas_pool(subjects: Sequence[SimulatedSubject], seen: Sequence[str]) -> list[SimulatedSubject]:
    """The atlas anchor's subjects, per direction: those of the anatomies the models were trained on; where a direction
    has none of them (a cohort of held-out anatomies), all its subjects, each left out of its own atlas (anchors.py)."""
    pool = []
    for direction in dict.fromkeys((s.label, s.target) for s in subjects):
        same = [s for s in subjects if (s.label, s.target) == direction]
        pool += [s for s in same if s.anatomy in set(seen)] or same
    return pool


def trained_anatomies(*models) -> list[str]:
    """The base anatomies recorded in the models' provenance (``controlcg train`` writes them); a model without the
    record was trained on cohort v1, whose one anatomy is the ICBM template."""
    seen: set[str] = set()
    for m in models:
        provenance = getattr(m, "provenance", None) or {}
        seen.update(provenance.get("anatomies") or ["icbm2009a"])
    return sorted(seen)


def _montages(out: Path, images: dict, subject: SimulatedSubject, settings: EvaluationSettings) -> None:
    base = {f"input ({subject.label})": images["input"], f"true {subject.target}": images["truth"]}
    title = f"{subject.subject}: {subject.label} -> {subject.target}"
    write_montages(out, images, base, title, [m.name for m in settings.methods()], settings)


def write_montages(out: Path, images: dict, base: dict, title: str, methods, settings: EvaluationSettings) -> None:
    """montage_w.png (ours over the w sweep) and montage_methods.png (``methods`` at the default w) of one subject:
    ``base`` columns first (the input, and the truth where there is one), the change from the input below each."""
    from ..figures import montage

    input_name = next(iter(base))
    ours = {f"ours w={w:g}": images[(OURS, float(w))] for w in settings.scales if (OURS, float(w)) in images}
    shown = {m: images[(m, float(settings.default_w))] for m in methods if (m, float(settings.default_w)) in images}
    for name, columns in (("montage_w.png", {**base, **ours}), ("montage_methods.png", {**base, **shown})):
        saliency = {k: v - base[input_name] for k, v in columns.items() if k != input_name}
        montage(out / name, columns, saliency, title=f"{title} ({name[8:-4]})")

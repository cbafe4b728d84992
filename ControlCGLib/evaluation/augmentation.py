"""Counterfactuals as extra training data (paper Table 3): a small real training set, one generated example per
subject and method, and a classifier per method trained and tested the same way."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..imaging.intensity import to_model_range
from .subjects import SimulatedSubject, balanced, model_tensor, prepare_subject, read_simulated, real_example


@dataclass(frozen=True)
class AugmentationSettings:
    real: int = 8  # real training scans (half per class): few, so that extra data can matter
    steps: int = 300  # classifier training steps, the same for every method
    batch_size: int = 8
    lr: float = 3e-3
    seed: int = 0


FAST_AUGMENTATION = AugmentationSettings(real=4, steps=8, batch_size=4)


def training_pairs(examples, class_names) -> list:
    """(volume (1, D, H, W), class index) pairs, what the classifier trainer and its validation read."""
    names = list(class_names)
    return [
        (torch.from_numpy(np.asarray(e["volume"], dtype=np.float32))[None], names.index(e["label"])) for e in examples
    ]


def generated_example(model, method, subject: SimulatedSubject, w: float, sampling, seed: int, intensity) -> dict:
    """One extra training example: the subject's counterfactual toward its other class, labelled with that class."""
    from ..pipeline import show
    from ..sampling.baselines import run_method

    config = model.config
    prepared = prepare_subject(subject, config.grid, config.intensity)
    y0 = model_tensor(prepared.model_input, config.intensity)
    result = run_method(method, model, y0, subject.label, subject.target, (w,), sampling, seed=seed)
    cf, _ = show(result, w, prepared, config.intensity, method.change)
    return {
        "method": method.name,
        "subject": subject.subject,
        "label": subject.target,
        "volume": to_model_range(cf, intensity),
    }


def train_and_test(
    classifier_config, train: Sequence[dict], val_set, test: Sequence[dict], settings: AugmentationSettings, out: Path
) -> dict:
    """Train a classifier on ``train`` examples (best by ``val_set``) and score it on ``test``: accuracy, balanced
    accuracy and the AUC of p(last class)."""
    from monai.metrics import compute_roc_auc

    from ..model.checkpoints import load_checkpoint
    from ..model.classifier import predict_proba
    from ..training.classifier_trainer import ClassifierTrainConfig, train_classifier

    names = list(classifier_config.class_names)
    data = training_pairs(train, names)
    config = ClassifierTrainConfig(
        steps=settings.steps,
        batch_size=settings.batch_size,
        lr=settings.lr,
        eval_every=max(1, settings.steps // 4),
        seed=settings.seed,
    )
    folder = train_classifier(classifier_config, data, val_set, out, config)
    model = load_checkpoint(folder)
    volumes = torch.stack([torch.from_numpy(np.asarray(e["volume"], dtype=np.float32))[None] for e in test])
    labels = np.array([names.index(e["label"]) for e in test])
    proba = predict_proba(model, volumes).numpy()
    predicted = proba.argmax(1)
    recalls = [float((predicted[labels == c] == c).mean()) for c in range(len(names)) if (labels == c).any()]
    auc = None
    if len(set(labels.tolist())) == 2:
        auc = float(compute_roc_auc(torch.from_numpy(proba[:, 1]), torch.from_numpy(labels.astype(np.float32))))
    return {
        "accuracy": float((predicted == labels).mean()),
        "balanced_accuracy": float(np.mean(recalls)),
        "auc": auc,
        "train_real": sum(e["method"] == "real" for e in train),
        "train_generated": sum(e["method"] != "real" for e in train),
        "steps": settings.steps,
    }


def augmentation_examples(model, classifier, settings, augment_cohort, aug, rank, world) -> dict:
    """The augmentation's examples, sharded over the ranks: real training and validation scans of the augmentation
    cohort, and one generated example per (method, training subject)."""
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
        sampling = settings.sampling(model.config.name)
        return {**generated_example(model, what, subject, settings.default_w, sampling, aug.seed, intensity)}

    examples = shard_map(jobs, make, rank, world)
    return {"examples": examples, "settings": aug}


def augmentation_table(classifier_config, extra: dict, settings, aug, out: Path) -> dict:
    """One classifier per method (and one with no extra data) trained on the real examples plus that method's, each
    scored on the held-out ``extra["test"]``."""
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

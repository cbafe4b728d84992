"""``controlcg train diffusion`` and ``controlcg train classifier`` (both resume from the run folder's state)."""

from __future__ import annotations

from .common import add_command


def _cmd_train_diffusion(args) -> int:
    """Train (or resume) the diffusion model on a cohort CSV (a simulated manifest or an ADNI-style list)."""
    import torch
    from tqdm.auto import tqdm

    from ..data.cohort import CohortDataset, cohort_anatomies, read_cohort, split_by_subject
    from ..model.config import preset
    from ..training.diffusion_trainer import TrainConfig, train_diffusion
    from ..training.distributed import init_from_env, shutdown

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
    held_out = splits.get("val")  # the split's validation subjects: scored at every checkpoint
    if held_out:
        held_out = CohortDataset(held_out, config.grid, config.class_names, config.intensity)
    train = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        precision=args.precision,
        checkpoint_every=args.checkpoint_every,
        seed=args.seed,
        finest_level_only=args.finest_level_only,
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
            init_from=args.init_from,
            held_out=held_out or None,
            provenance={
                "cohort": str(args.cohort),
                "subjects": len(splits["train"]),
                "anatomies": cohort_anatomies(args.cohort),
                **({"initialised_from": _model_origin(args.init_from)} if args.init_from else {}),
            },
        )
    shutdown()
    if rank == 0:
        print(f"wrote {result.folder}")
    return 0


def _model_origin(folder) -> dict:
    """What a warm start began from: the folder, its weights' hash and what those were trained on."""
    from pathlib import Path

    from ..hashing import file_sha256
    from ..model.checkpoints import WEIGHTS, read_checkpoint_config

    _, provenance = read_checkpoint_config(folder)
    return {
        "folder": str(folder),
        "sha256": file_sha256(Path(folder) / WEIGHTS),
        "cohort": provenance.get("cohort"),
        "steps": provenance.get("steps"),
    }


def _cmd_train_classifier(args) -> int:
    """Train the diagnostic classifier on a cohort CSV; the best validation accuracy's weights are kept."""
    from ..data.cohort import CohortDataset, cohort_anatomies, read_cohort, split_by_subject
    from ..model.config import CLASSIFIER_PRESETS
    from ..training.classifier_trainer import ClassifierTrainConfig, train_classifier

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

    origin = {
        "cohort": str(args.cohort),
        "subjects": {k: len(v) for k, v in splits.items()},
        "anatomies": cohort_anatomies(args.cohort),
    }
    folder = train_classifier(config, data["train"], data["val"], args.out, train, on_eval=report, provenance=origin)
    print(f"wrote {folder}")
    return 0


def register(sub) -> None:
    from ..model.config import PRESETS

    train = sub.add_parser("train", help="train models (resumes when the output folder holds a state)")
    train_sub = train.add_subparsers(dest="what", metavar="WHAT", required=True)
    p = add_command(train_sub, "diffusion", "train the class-conditional diffusion model", _cmd_train_diffusion)
    p.add_argument("--cohort", required=True, help="cohort CSV (image,label,subject[,split]) or a simulated manifest")
    p.add_argument("--out", required=True, help="run folder: state/, model/, metrics.csv")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS), help="model configuration preset")
    p.add_argument("--steps", type=int, default=10_000)
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--precision", choices=["auto", "bf16", "no"], default="auto")
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--init-from",
        metavar="MODEL",
        help="start a fresh run from this model folder's weights: the preset may add attention blocks or finer outer "
        "levels (cpu-2mm from a cpu model)",
    )
    p.add_argument(
        "--finest-level-only",
        action="store_true",
        help="train only the finest level's way up (all coarser weights frozen; several times faster per step): the "
        "first stage after --init-from grew the network by a finer level",
    )

    p = add_command(train_sub, "classifier", "train the diagnostic classifier (3D DenseNet)", _cmd_train_classifier)
    p.add_argument("--cohort", required=True, help="cohort CSV (image,label,subject[,split]) or a simulated manifest")
    p.add_argument("--out", required=True, help="run folder: model/ (best validation accuracy), metrics.csv")
    p.add_argument("--preset", default="cpu", choices=["cpu", "cpu-judge", "paper"], help="classifier preset")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-2)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)

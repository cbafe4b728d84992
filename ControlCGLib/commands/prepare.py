"""``controlcg prepare``: a researcher's cohort CSV through the product's own preparation, for training and
evaluation (data/preparation.py)."""

from __future__ import annotations

from .common import add_command


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (0-based i) -> (i, n), refused with a message naming the problem."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must read i/n (e.g. 0/8), got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard i/n needs 0 <= i < n, got {text!r}")
    return index, count


def _settings(args):
    from ..data.preparation import PrepareSettings
    from ..model.checkpoints import read_checkpoint_config
    from ..model.config import preset

    if args.model:
        config, _ = read_checkpoint_config(args.model)
    else:
        config = preset(args.preset)
    grid = tuple(args.grid) if args.grid else tuple(config.grid)
    if len(grid) != 3 or min(grid) < 4:
        raise ValueError(f"--grid needs three sizes of at least 4 (z y x), got {list(grid)}")
    screen = "warn" if args.accept_unusual_scan else "refuse"
    return PrepareSettings(grid=grid, intensity=config.intensity, screen=screen), config.class_names


def _cmd_prepare(args) -> int:
    """Every scan of a cohort CSV registered, masked and normalised as the counterfactual does it; prepared.csv."""
    import os
    import time

    from tqdm.auto import tqdm

    from ..data.cohort import read_cohort
    from ..data.preparation import Cancelled, prepare_cohort
    from ..training.distributed import init_from_env, shutdown

    settings, class_names = _settings(args)
    shard = parse_shard(args.shard) if args.shard else (0, 1)
    rank, world = (0, 1)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun: each rank one shard
        if args.shard:
            raise ValueError("give --shard or run under torchrun, not both")
        rank, world = init_from_env("cpu")
        shard = (rank, world)
    total = len(read_cohort(args.cohort, class_names, check_files=False)[shard[0] :: shard[1]])
    bar = tqdm(total=total, desc=f"preparing (shard {shard[0]}/{shard[1]})", unit="scan", mininterval=1.0)
    began = time.perf_counter()
    counts = {"new": 0, "skipped": 0}

    def on_scan(record):
        counts["skipped" if record.get("skipped") else "new"] += 1
        if record["status"] == "refused" and not record.get("skipped"):
            tqdm.write(f"refused {record['source']}: {record['reason']}")
        bar.update(1)

    try:
        summary = prepare_cohort(
            args.cohort,
            args.out,
            settings,
            class_names=class_names,
            shard=shard,
            workers=args.workers,
            on_scan=on_scan,
            write_tables=world == 1,
        )
    except Cancelled as exc:
        bar.close()
        print(exc)
        return 1
    bar.close()
    elapsed = time.perf_counter() - began
    if world > 1:
        import torch

        torch.distributed.barrier()
        if rank == 0:
            summary = prepare_cohort(args.cohort, args.out, settings, class_names=class_names, shard=(0, 1))
        shutdown()
        if rank != 0:
            return 0
    if counts["new"]:
        print(f"{counts['new']} scans in {elapsed:.1f} s ({elapsed / counts['new']:.1f} s a scan with {args.workers} "
              f"worker(s)); {counts['skipped']} already done")  # fmt: skip
    if not summary["complete"]:
        print(
            f"{summary['done']} of {summary['scans']} scans done; the other shards' scans are missing. When every "
            f"shard has finished, run controlcg prepare {args.cohort} --out {args.out} once more (nothing is redone) "
            "to write prepared.csv"
        )
        return 0
    print(
        f"{summary['prepared']} prepared, {summary['refused']} refused "
        f"({', '.join(f'{k}: {v}' for k, v in summary['refused_by_kind'].items()) or 'none'}), "
        f"{len(summary['flagged'])} flagged for a look; median {summary['seconds_per_scan']['median']} s a scan"
    )
    for r in summary["refusals"]:
        print(f"  refused {r['source']} ({r['subject']}): {r['reason']}")
    for f in summary["flagged"]:
        print(f"  flagged {f['source']} ({f['subject']}): {'; '.join(f['flags'])}")
    print(f"wrote {args.out}/prepared.csv, refusals.csv, qc.csv, contact_sheet*.png, summary.json")
    return 0


def register(sub) -> None:
    from ..model.config import PRESETS

    p = add_command(
        sub,
        "prepare",
        "prepare a cohort CSV (image,label,subject[,split]) for training and evaluation, as the counterfactual does",
        _cmd_prepare,
    )
    p.add_argument("cohort", help="cohort CSV: image (a file or a DICOM series folder), label, subject[, split]")
    p.add_argument("--out", required=True, help="folder: scans/, prepared.csv, refusals.csv, qc.csv, contact sheets")
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS), help="the model configuration whose grid and "
                   "intensity normalisation to prepare for")  # fmt: skip
    p.add_argument("--model", default=None, help="a model folder whose grid and normalisation to use (over --preset)")
    p.add_argument(
        "--grid", type=int, nargs=3, default=None, metavar=("Z", "Y", "X"),
        help="another model grid (e.g. 80 96 80: the template's 2 mm, for later models)",
    )  # fmt: skip
    p.add_argument("--workers", type=int, default=1, help="processes preparing scans in parallel")
    p.add_argument("--shard", default=None, metavar="I/N", help="prepare only rows I, I+N, ... (a cluster array job); "
                   "torchrun's ranks shard by themselves")  # fmt: skip
    p.add_argument(
        "--accept-unusual-scan", action="store_true",
        help="keep scans the checks find unusual (flagged in qc.csv) instead of refusing them",
    )  # fmt: skip

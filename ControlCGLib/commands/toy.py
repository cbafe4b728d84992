"""``controlcg toy-demo``: the whole method on balls in a 16^3 box, trained in seconds (no brain data needed)."""

from __future__ import annotations

import json

from ..defaults import PAPER_START_STRENGTH, w_key
from .common import add_command, add_overwrite, add_threads, output_folder, set_threads


def _cmd_toy_demo(args) -> int:
    """Train the toy model, make counterfactuals across w, write a montage and a summary."""
    import torch
    from tqdm.auto import tqdm

    from ..data.toy import toy_batch, toy_summary
    from ..figures import montage
    from ..imaging.intensity import from_model_range
    from ..model.checkpoints import save_checkpoint
    from ..progress import TqdmProgress
    from ..sampling.noise import make_generator
    from ..sampling.sampler import counterfactual
    from ..sampling.settings import SamplingConfig
    from ..training.toy import train_toy

    out = output_folder(args.out, args.overwrite)
    set_threads(args.threads)

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
    sampling = SamplingConfig(steps=args.steps, start_strength=PAPER_START_STRENGTH)  # the toy runs as the paper
    with TqdmProgress("counterfactual small -> large") as progress:
        result = counterfactual(model, y0, "large", ws, sampling, seed=args.seed, on_step=progress)

    unit = from_model_range(y0).numpy()
    columns = {"input (small)": unit}
    saliency = {}
    for w in ws:
        cf = from_model_range(result[w]).clamp(0, 1).numpy()
        columns[f"w={w_key(w)}"] = cf
        saliency[f"w={w_key(w)}"] = cf - unit  # signed: red where the counterfactual is brighter
    summary = {**toy_summary(y0, result.images), "seconds": result.seconds, "settings": result.settings}
    png = montage(
        out / "montage.png", columns, saliency, title="toy counterfactuals: small ball -> large ball, across w"
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps({k: summary[k] for k in ("input", "counterfactuals")}, indent=2))
    print(f"wrote {png} and {out / 'summary.json'} ({result.seconds:.1f} s of sampling)")
    return 0


def register(sub) -> None:
    p = add_command(sub, "toy-demo", "train a toy model on the CPU and show counterfactuals across w", _cmd_toy_demo)
    p.add_argument("--out", default="controlcg-toy-demo", help="output folder")
    p.add_argument("--train-steps", type=int, default=400, help="toy training steps")
    p.add_argument("--steps", type=int, default=25, help="DDIM steps")
    p.add_argument("--w", type=float, nargs="+", default=[0.0, 1.0, 3.0, 6.0], help="guidance scales")
    p.add_argument("--seed", type=int, default=0)
    add_threads(p)
    add_overwrite(p)

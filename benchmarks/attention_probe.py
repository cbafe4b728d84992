"""Can attention injection act? Per self-attention layer of a diffusion model, on a held-out subject:

- **entropy**: the attention distribution's entropy over keys ÷ log(tokens), averaged over sampled queries (1 = it
  looks everywhere alike: injected keys could only shift a mean);
- **ablation share**: how far the v prediction moves (relative L2) when that layer's self-attention is removed;
- **injection share**: how far it moves when the layer injects another subject's tokens (Eq. 8) instead of none.

    python benchmarks/attention_probe.py --cohort heldout/manifest.csv --out docs/attention_probe [--model DIR]

Prints one line per layer and timestep and writes probe.json. The subjects are the first two of the cohort's held-out
anatomies (CIT168, CAT12) when it has them.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from ControlCGLib.evaluation.subjects import model_tensor, prepare_subject, read_simulated
from ControlCGLib.model.checkpoints import load_checkpoint
from ControlCGLib.resources import diffusion_dir
from ControlCGLib.sampling.injection import SelfAttentionControl, _project, self_attention_layers
from ControlCGLib.sampling.noise import make_generator, sample_noise
from ControlCGLib.sampling.schedule import Schedule

HELD_OUT = ("cit168", "cat12")


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default=None)
    ap.add_argument("--timesteps", type=int, nargs="+", default=[100, 250, 500])
    ap.add_argument("--queries", type=int, default=256, help="queries sampled per layer for the entropy")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = load_checkpoint(args.model or diffusion_dir())
    config = model.config
    subjects = read_simulated(args.cohort)
    chosen = [s for s in subjects if s.anatomy in HELD_OUT][:2] or subjects[:2]
    ys = [model_tensor(prepare_subject(s, config.grid, config.intensity).model_input, config.intensity) for s in chosen]
    ys = [y.reshape(1, 1, *config.grid) for y in ys]
    schedule = Schedule(config.schedule)
    unet, cond = model.unet, model.conditioning(1, 1)
    layers = self_attention_layers(model)
    records = []
    for t in args.timesteps:
        g = make_generator(t)
        noise = sample_noise(ys[0].shape, g, None)
        x, other = (schedule.q_sample(y, t, noise) for y in ys)
        tt = torch.full((1,), t, dtype=torch.long)
        tokens: dict[str, torch.Tensor] = {}
        hooks = [
            m.register_forward_hook(lambda mod, inp, out, n=n, seen=tokens: seen.__setitem__(n, inp[0].detach()))
            for n, m in layers.items()
        ]
        with torch.no_grad():
            base = unet(x, tt, **cond).float()
        for h in hooks:
            h.remove()
        for name, layer in layers.items():
            h = tokens[name]
            with torch.no_grad():
                q, k = _project(layer, h, 0), _project(layer, h, 1)
                pick = torch.randperm(q.shape[2], generator=torch.Generator().manual_seed(0))[: args.queries]
                p = torch.softmax(q[:, :, pick] @ k.transpose(-1, -2) * layer.scale, dim=-1)
                entropy = float((-(p * p.clamp_min(1e-12).log()).sum(-1)).mean() / math.log(k.shape[2]))
                original = layer.forward
                layer.forward = lambda *a, **kw: torch.zeros_like(a[0])
                try:
                    ablated = unet(x, tt, **cond).float()
                finally:
                    layer.forward = original
                injector = SelfAttentionControl(model, [name])
                with injector:
                    with injector.recording():
                        unet(other, tt, **model.conditioning(model.null_class, 1))
                    with injector.injecting():
                        injected = unet(x, tt, **cond).float()
            record = {
                "t": t,
                "layer": name,
                "tokens": int(k.shape[2]),
                "entropy": round(entropy, 4),
                "ablation_share": round(_relative(ablated, base), 5),
                "injection_share": round(_relative(injected, base), 5),
            }
            records.append(record)
            print(json.dumps(record), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.json").write_text(
        json.dumps(
            {"model": str(args.model or diffusion_dir()), "subjects": [s.subject for s in chosen], "records": records},
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()

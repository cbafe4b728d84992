"""Forward time of each model preset and the time of one counterfactual with the CPU preset (default settings).

Untrained weights are perturbed away from MONAI's zero-initialised output layers so the arithmetic is the real one.
Run on a quiet machine: ``python benchmarks/presets.py [--threads 2] [--skip-paper]``.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from ControlCGLib.model.config import PRESETS
from ControlCGLib.model.networks import ClassConditionalUNet, count_parameters
from ControlCGLib.sampling.sampler import counterfactual
from ControlCGLib.sampling.settings import SamplingConfig


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-paper", action="store_true", help="skip the 80x96x80 paper preset (~20 s a forward)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads")
    models = {}
    for name, cfg in PRESETS.items():
        if name == "paper" and args.skip_paper:
            continue
        torch.manual_seed(0)
        model = ClassConditionalUNet(cfg).eval()
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.01)
        models[name] = model
        x = torch.randn(1, 1, *cfg.grid)
        t, lab = torch.tensor([500]), torch.tensor([1])
        with torch.no_grad():
            sec = _median_time(lambda m=model, x=x, t=t, lab=lab: m(x, t, lab), args.repeats if name != "paper" else 1)
        print(f"forward  preset={name:6s} grid={cfg.grid} params={count_parameters(model) / 1e6:.2f}M  {sec:.3f} s")
    model = models["cpu"]
    sampling = SamplingConfig()
    y0 = torch.rand(*model.config.grid) * 2 - 1
    t0 = time.perf_counter()
    result = counterfactual(model, y0, "AD", 3.0, sampling, seed=0)
    total = time.perf_counter() - t0
    print(
        f"counterfactual preset=cpu steps={sampling.steps} solver={sampling.solver} injection=on w=3: {total:.1f} s "
        f"({result.seconds / sampling.steps:.2f} s/step, 3 UNet passes per step)"
    )


if __name__ == "__main__":
    main()

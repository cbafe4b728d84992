"""The memory estimate (ControlCGLib/sampling/memory.py) against what a real run takes, each case in a fresh process.

    python benchmarks/memory.py [--cases small|paper|all] [--out benchmarks/results/memory_cpu.json]

CPU: the process's peak resident memory during sampling (VmHWM, reset through /proc/self/clear_refs just before)
minus its resident memory before; CUDA: torch.cuda.max_memory_allocated minus the allocation before. The estimate
adds the runtime's own growth (memory.RUNTIME: oneDNN scratch pads, thread pools, the allocator), which this script
measured. A ratio >= 1 means the refusal errs on the safe side.
Last line: ``estimate_over_measured=min..max``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CASE = r"""
import json, sys, torch
from pathlib import Path
from ControlCGLib.sampling.settings import SamplingConfig
from ControlCGLib.model.config import preset
from ControlCGLib.sampling.memory import estimate
from ControlCGLib.model.networks import ClassConditionalUNet
from ControlCGLib.sampling.sampler import counterfactual
name, n_w, precision, device = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.set_num_threads(2)
config = preset(name)
sampling = SamplingConfig(steps=20, start_strength=0.1, precision=precision)  # two steps
est = estimate(config, n_w, precision, sampling.injection, device)
model = ClassConditionalUNet(config).to(device).eval()
y0 = torch.zeros(config.grid)
def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1]) * 1024
if device == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); before = torch.cuda.memory_allocated()
else:
    Path("/proc/self/clear_refs").write_text("5"); before = status("VmRSS:")
counterfactual(model, y0, 1, [float(w) for w in range(n_w)], sampling, seed=0)
if device == "cuda":
    torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated()
else:
    peak = status("VmHWM:")
measured = peak - before + sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({"preset": name, "n_w": n_w, "precision": precision, "device": device,
                  "estimate": est.total, "passes": est.passes, "measured": measured}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--cases", choices=["small", "paper", "all"], default="small", help="paper: the paper grid (slow on a CPU)"
    )
    args = parser.parse_args()
    small = [("cpu", 1, "fp32"), ("cpu", 4, "fp32"), ("cpu", 1, "bf16"), ("cpu", 4, "bf16")]
    paper = [("paper", 1, "bf16"), ("paper", 1, "fp32")]
    cases = {"small": small, "paper": paper, "all": small + paper}[args.cases]
    rows = []
    for name, n_w, precision in cases:
        cmd = [sys.executable, "-c", CASE, name, str(n_w), precision, args.device]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["ratio"] = round(row["estimate"] / row["measured"], 3)
        rows.append(row)
        print(
            f"{name:6s} w x{n_w} {precision}: estimate {row['estimate'] / 2**20:7.1f} MiB, "
            f"measured {row['measured'] / 2**20:7.1f} MiB, ratio {row['ratio']:.2f}",
            flush=True,
        )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
    ratios = [r["ratio"] for r in rows]
    print(f"estimate_over_measured={min(ratios):.2f}..{max(ratios):.2f}")


if __name__ == "__main__":
    main()

"""Speed of the sampling loop against the naive loop, on the embedded model (and, without --quick, the paper grid).

    python benchmarks/speed.py --quick        # < 1 min on a 2-core CPU; last line: speedup_vs_naive=X.XX
    python benchmarks/speed.py --out benchmarks/results/speed_cpu.json

Naive loop: one full run per w -- at every step a reference pass, a conditional and an unconditional pass, nothing
shared between w values, fp32. Optimised loop: the product's -- one run for the whole sweep with the reference pass
shared by every w (it depends on neither w nor the class), the UNet under bfloat16 autocast where the CPU has it.
Both run on the bundled sample with the same seed; their outputs are compared (max |difference|, and the SSIM to the
input, which must agree within 0.005 on this one sample; `benchmarks/embedded_quality.py --precision` compares the
held-out metrics). Each variant runs in a fresh process so that its peak memory is its own. Also printed: UNet
forward time, FLOPs per pass and per counterfactual (torch's FlopCounterMode), this machine's measured
matrix-multiply ceiling and the share of it the loop reaches, and the time to a result after the slider moves.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch


def _setup(threads: int):
    import SimpleITK as sitk

    from ControlCGLib.imaging.intensity import to_model_range
    from ControlCGLib.imaging.native_space import prepare
    from ControlCGLib.model.checkpoints import load_checkpoint
    from ControlCGLib.resources import diffusion_dir, sample_scan

    torch.set_num_threads(threads)
    model = load_checkpoint(diffusion_dir())
    prepared = prepare(sitk.ReadImage(str(sample_scan())), model.config.grid, intensity=model.config.intensity)
    y0 = torch.from_numpy(np.asarray(to_model_range(prepared.model_input, model.config.intensity), dtype=np.float32))
    return model, y0


def _variant(kind: str, ws: list[float], steps: int, threads: int, y0: np.ndarray, queue) -> None:
    """Child process: run one variant, report seconds, outputs and peak memory."""
    import resource

    from ControlCGLib.model.checkpoints import load_checkpoint
    from ControlCGLib.resources import diffusion_dir
    from ControlCGLib.sampling.sampler import counterfactual
    from ControlCGLib.sampling.settings import SamplingConfig

    torch.set_num_threads(threads)
    model, y0 = load_checkpoint(diffusion_dir()), torch.from_numpy(y0)
    precision = "bf16" if "bf16" in kind else "fp32"
    sampling = SamplingConfig(steps=steps, start_strength=0.3, precision=precision)
    began = time.perf_counter()
    if kind == "naive":
        images = {w: counterfactual(model, y0, "AD", [w], sampling, seed=0)[w] for w in ws}
    else:  # "paired": the product's default since issue 16 (the source class's trajectory beside the target's)
        source = "CN" if kind.endswith("paired") else None
        images = counterfactual(model, y0, "AD", ws, sampling, seed=0, source=source).images
    seconds = time.perf_counter() - began
    single = time.perf_counter()
    if kind != "naive":  # the slider left the sweep: one new w alone
        counterfactual(model, y0, "AD", [ws[0] + 0.5], sampling, seed=0, source=source)
    single = time.perf_counter() - single
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB on Linux
    queue.put({"kind": kind, "seconds": seconds, "single_w_seconds": single, "peak_mib": peak,
               "images": {w: x.numpy() for w, x in images.items()}})  # fmt: skip


def _run(kind, ws, steps, threads, y0) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_variant, args=(kind, ws, steps, threads, y0.numpy(), queue))
    proc.start()
    out = queue.get()
    proc.join()
    return out


def matmul_ceiling(dtype: torch.dtype, n: int = 1024, reps: int = 8) -> float:
    """GFLOP/s of a square matrix product on this machine (best of ``reps``)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(reps))
    return 2 * n**3 / best / 1e9


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def forward_cost(model, dtype: str, reps: int = 3) -> tuple[float, float]:
    """(seconds, GFLOP) of one UNet pass on the model grid."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 1, *model.config.grid)
    t = torch.full((1,), 500, dtype=torch.long)
    labels = model.labels(1, 1, "cpu")
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if dtype == "bf16" else torch.autocast("cpu", enabled=False)
    with torch.no_grad(), ctx:
        model(x, t, labels)
        seconds = min(_timed(lambda: model(x, t, labels)) for _ in range(reps))
        with FlopCounterMode(display=False) as counter:
            model(x, t, labels)
    return seconds, counter.get_total_flops() / 1e9


def rejected_changes(model) -> dict:
    """Batching the conditional and unconditional passes, and channels-last-3d memory: each against the plain pass."""
    out = {}
    for precision in ("fp32", "bf16"):
        one, _ = forward_cost(model, precision)
        two = _batched_pass(model, precision)
        out[f"batch cond+uncond ({precision})"] = f"{two * 1000:.0f} ms vs 2 x {one * 1000:.0f} ms"
        model.to(memory_format=torch.channels_last_3d)
        cl, _ = forward_cost(model, precision)
        model.to(memory_format=torch.contiguous_format)
        out[f"channels_last_3d ({precision})"] = f"{cl * 1000:.0f} ms vs {one * 1000:.0f} ms"
    return out


def _batched_pass(model, precision: str, reps: int = 3) -> float:
    x = torch.randn(2, 1, *model.config.grid)
    t = torch.full((2,), 500, dtype=torch.long)
    labels = torch.cat([model.labels(1, 1, "cpu"), model.labels(model.null_class, 1, "cpu")])
    ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.no_grad(), ctx:
        model(x, t, labels)
        return min(_timed(lambda: model(x, t, labels)) for _ in range(reps))


def end_to_end(threads: int) -> dict:
    """Wall time of the command a user runs (process start, loading, registration, sampling, writing)."""
    import subprocess
    import sys
    import tempfile

    from ControlCGLib.resources import sample_scan

    out = {}
    for precision in ("fp32", "auto"):
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "ControlCGLib.cli", "counterfactual", str(sample_scan()), "--target", "AD"]
            cmd += ["--w", "4", "--out", f"{tmp}/o", "--threads", str(threads), "--precision", precision]
            out[precision] = _timed(lambda c=cmd: subprocess.run(c, check=True, capture_output=True))
    return out


def _ssim_gap(y0, images, reference) -> float:
    ours, theirs = _ssim_to_input(y0, images), _ssim_to_input(y0, reference)
    return max(abs(ours[w] - theirs[w]) for w in ours)


def _ssim_to_input(y0, images) -> dict:
    from ControlCGLib.evaluation.metrics import ssim
    from ControlCGLib.imaging.intensity import from_model_range

    unit = np.clip(from_model_range(y0.numpy()), 0, 1)
    return {w: ssim(unit, np.clip(from_model_range(x), 0, 1)) for w, x in images.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="embedded model only, 3 w values on a 20-step grid")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    args = p.parse_args()

    ws = [2.0, 4.0, 6.0] if args.quick else [2.0, 4.0, 6.0, 8.0]
    steps = 20 if args.quick else 50
    torch.set_num_threads(args.threads)
    model, y0 = _setup(args.threads)
    ceiling = {"fp32": matmul_ceiling(torch.float32), "bf16": matmul_ceiling(torch.bfloat16)}
    fwd = {d: forward_cost(model, d) for d in ("fp32", "bf16")}
    from ControlCGLib.sampling.sampler import sampling_timesteps
    from ControlCGLib.sampling.schedule import Schedule
    from ControlCGLib.sampling.settings import SamplingConfig

    n_steps = len(sampling_timesteps(Schedule(model.config.schedule), SamplingConfig(steps=steps, start_strength=0.3)))
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    device = (
        f"CPU, {os.cpu_count()} cores ({platform.machine()}{', avx512_bf16' if 'avx512_bf16' in flags else ''}), "
        f"{args.threads} threads, torch {torch.__version__}"
    )
    print(f"device: {device}")
    print(f"matmul ceiling: fp32 {ceiling['fp32']:.0f} GFLOP/s, bf16 {ceiling['bf16']:.0f} GFLOP/s")
    for d, (s, g) in fwd.items():
        print(f"embedded UNet forward ({d}): {s * 1000:.0f} ms, {g:.2f} GFLOP")
    print(f"sweep w = {ws}, {n_steps} steps (a {steps}-step grid from 30 %)")

    kinds = ("naive", "optimised-bf16", "optimised-bf16-paired")
    if not args.quick:
        kinds = ("naive", "optimised-fp32", "optimised-bf16", "optimised-bf16-paired")
    runs = {k: _run(k, ws, steps, args.threads, y0) for k in kinds}
    if _ssim_gap(y0, runs["optimised-bf16"]["images"], runs["naive"]["images"]) >= 0.005 and args.quick:
        runs["optimised-fp32"] = _run("optimised-fp32", ws, steps, args.threads, y0)  # bf16 changed the result
    naive = runs["naive"]
    report = {"device": device, "ws": ws, "steps": n_steps, "ceiling_gflops": ceiling, "forward": fwd, "variants": {}}
    for kind, r in runs.items():
        diff = max(float(np.abs(r["images"][w] - naive["images"][w]).max()) for w in ws)
        ssim_gap = _ssim_gap(y0, r["images"], naive["images"])
        passes = n_steps * len(ws) * 3 if kind == "naive" else n_steps * (1 + 2 * len(ws))
        if kind.endswith("paired"):
            passes = n_steps * (1 + 4 * len(ws))  # one reference pass shared by both classes and every w
        precision = "bf16" if "bf16" in kind else "fp32"
        gflop = passes * fwd[precision][1]
        share = gflop / r["seconds"] / ceiling[precision]
        report["variants"][kind] = {
            "seconds": r["seconds"],
            "per_counterfactual_seconds": r["seconds"] / len(ws),
            "single_w_seconds": r["single_w_seconds"] or None,
            "peak_mib": r["peak_mib"],
            "unet_passes": passes,
            "gflop": gflop,
            "ceiling_share": share,
            "max_abs_diff_vs_naive": diff,
            "max_ssim_gap_vs_naive": ssim_gap,
            "speedup_vs_naive": naive["seconds"] / r["seconds"],
        }
        print(
            f"{kind:15s} {r['seconds']:6.1f} s for {len(ws)} w ({r['seconds'] / len(ws):.1f} s each), "
            f"{passes} passes, {gflop:.0f} GFLOP, {100 * share:.1f} % of the {precision} ceiling, peak "
            f"{r['peak_mib']:.0f} MiB, max |diff| vs naive {diff:.2e}, SSIM gap {ssim_gap:.4f}, "
            f"x{naive['seconds'] / r['seconds']:.2f}"
        )
    best = (
        "optimised-bf16" if report["variants"]["optimised-bf16"]["max_ssim_gap_vs_naive"] < 0.005 else "optimised-fp32"
    )
    b = report["variants"][best]
    paired = report["variants"]["optimised-bf16-paired"]["seconds"] / report["variants"]["optimised-bf16"]["seconds"]
    report["paired_cost_vs_unpaired"] = paired
    print(f"paired counterfactual (the product's default): x{paired:.2f} the time of the unpaired sweep")
    print(
        "slider: a w of the precomputed sweep = a lookup (no computation); "
        f"a new w alone: {b['single_w_seconds']:.1f} s"
    )
    if not args.quick:
        report["rejected"] = rejected_changes(model)
        for name, r in report["rejected"].items():
            print(f"measured, not kept: {name}: {r}")
        report["end_to_end"] = end_to_end(args.threads)
        for name, seconds in report["end_to_end"].items():
            print(f"end to end, controlcg counterfactual sample --w 4 ({name}): {seconds:.1f} s")
        from ControlCGLib.model.config import preset
        from ControlCGLib.model.networks import ClassConditionalUNet

        paper = ClassConditionalUNet(preset("paper")).eval()  # fused attention on (the preset's choice)
        report["paper_forward"] = {d: forward_cost(paper, d, reps=1) for d in ("fp32", "bf16")}
        unfused = preset("paper")
        unfused = unfused.replace(unet=dataclasses.replace(unfused.unet, use_flash_attention=False))
        s_unfused, _ = forward_cost(ClassConditionalUNet(unfused).eval(), "bf16", reps=1)
        report["paper_forward_bf16_without_fused_attention"] = s_unfused
        print(f"paper UNet forward (bf16) without fused attention: {s_unfused:.2f} s")
        for d, (s, g) in report["paper_forward"].items():
            est = 50 * 3 * s
            print(f"paper UNet 80x96x80 forward ({d}): {s:.2f} s, {g:.0f} GFLOP; 50 steps x 3 passes ~ {est:.0f} s")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"speedup_vs_naive={b['speedup_vs_naive']:.2f}")


if __name__ == "__main__":
    main()

"""The product's counterfactual against the naive loop, on the embedded model; the UNet profiled; the paper grid.

    python benchmarks/speed.py --quick        # ~5 min on a 2-core CPU; last line: speedup_vs_naive=X.XX
    python benchmarks/speed.py --out benchmarks/results/speed_cpu.json        # ~10 min: adds end to end and paper grid
    python benchmarks/speed.py --presets --model-2mm MODEL --out benchmarks/results/speed_cpu.json  # 4 mm vs 2 mm

Both loops make the same counterfactual: the paired, blended counterfactual of the bundled sample toward AD (paired
with CN, the classifier's verdict), injection off (the product's choice for the embedded model), seed 0.

- **naive**: the straightforward loop -- one run per w, on the 50-step grid (15 steps from 30 %), fp32, exact
  attention.
- then one change at a time, each in a fresh process (so that its peak memory is its own): one run for the whole
  sweep on the 20-step grid (6 steps; the trajectories share the first step's passes, where they all start from one
  x_t), bfloat16 autocast, fewer keys in the large attention layers (``kv_stride`` 2): the last row is the product.

Printed per row: seconds, UNet passes (counted), GFLOP (torch's FlopCounterMode) and the share of this machine's
measured bf16/fp32 matrix-multiply ceiling, peak memory, and the held-out quality of that setting -- measured by
``controlcg evaluate`` on the selection subjects (never the reported ones) and read from ``--quality`` (a JSON of
summaries; see docs/performance.md for the commands). Also: where one UNet pass spends its time (convolutions,
attention, norms, the rest), library settings tried and not kept, and (without --quick) the command a user runs end
to end and the paper configuration's pass and counterfactual.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
QUALITY = HERE / "results" / "quality_selection.json"


@dataclass(frozen=True)
class Variant:
    """One row of the ladder: the product's sampling with these settings changed (None: the product's)."""

    name: str
    steps: int | None  # the grid from pure noise; the run keeps its last start strength (30 %)
    precision: str  # the product's is "auto": bf16 on this project's avx512_bf16 CPU
    kv_stride: int | None
    per_w: bool  # one run per w (nothing shared between w values)
    quality: str  # its key in the quality file


LADDER = (
    Variant("naive", 50, "fp32", 1, True, "fp32-kv1-grid50"),
    Variant("sweep, 20-step grid", 20, "fp32", 1, False, "fp32-kv1"),
    Variant("+ bf16", 20, "bf16", 1, False, "bf16-kv1"),
    Variant("+ kv stride 2 (product)", None, "bf16", None, False, "bf16-kv2"),
)


def _sampling(v: Variant, model_name: str = "cpu"):
    """The sampling of one row, from the product's (sampling/settings.product_sampling)."""
    from ControlCGLib.sampling.settings import product_sampling

    return product_sampling(model_name, steps=v.steps, precision=v.precision, kv_stride=v.kv_stride)


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


def _variant(v: Variant, ws: list[float], threads: int, y0: np.ndarray, queue) -> None:
    """Child process: run one variant, report seconds, passes, outputs and peak memory."""
    import resource

    from ControlCGLib.model.checkpoints import load_checkpoint
    from ControlCGLib.resources import diffusion_dir
    from ControlCGLib.sampling.sampler import counterfactual

    torch.set_num_threads(threads)
    model, y0 = load_checkpoint(diffusion_dir()), torch.from_numpy(y0)
    passes = _count_passes(model)
    sampling = _sampling(v, model.config.name)
    run = lambda scales: counterfactual(model, y0, "AD", scales, sampling, seed=0, source="CN")  # noqa: E731
    run([ws[0]])  # warm-up (oneDNN primitive creation), not timed
    passes.clear()
    began = time.perf_counter()
    if v.per_w:
        images = {w: run([w]).paired_change(w) for w in ws}
    else:
        result = run(ws)
        images = {w: result.paired_change(w) for w in ws}
    seconds = time.perf_counter() - began
    n_passes = len(passes)
    single = time.perf_counter()
    run([ws[0] + 0.5])  # the slider left the sweep: one new w alone
    single = time.perf_counter() - single
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB on Linux
    queue.put({"seconds": seconds, "passes": n_passes, "single_w_seconds": single, "peak_mib": peak,
               "changes": {w: x.numpy() for w, x in images.items()}})  # fmt: skip


def _count_passes(model) -> list:
    calls, original = [], model.unet.forward

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    model.unet.forward = counted
    return calls


def _run(v: Variant, ws, threads, y0) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_variant, args=(v, ws, threads, y0.numpy(), queue))
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


def _kv(model, kv_stride: int):
    from ControlCGLib.sampling.injection import SelfAttentionControl

    return SelfAttentionControl(model, (), kv_stride=kv_stride) if kv_stride > 1 else contextlib.nullcontext()


@contextlib.contextmanager
def _precision(dtype: str, model=None):
    """bf16 autocast as the product runs it: with the weights channels-last (guided_step.weight_layout)."""
    from ControlCGLib.sampling.guided_step import weight_layout

    layout = weight_layout(model, dtype) if model is not None else contextlib.nullcontext()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"), layout:
        yield


def forward_cost(model, dtype: str, reps: int = 3, kv_stride: int = 1) -> tuple[float, float]:
    """(seconds, GFLOP) of one UNet pass on the model grid. Torch's counter has no formula for the CPU's fused
    attention kernel (it would count none of the attention); it is given the one it uses for the GPU kernels."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def attention_flop(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    cpu_attention = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: attention_flop}

    x = torch.randn(1, 1, *model.config.grid)
    t = torch.full((1,), 500, dtype=torch.long)
    labels = model.labels(1, 1, "cpu")
    with torch.no_grad(), _precision(dtype, model), _kv(model, kv_stride):
        model(x, t, labels)
        seconds = min(_timed(lambda: model(x, t, labels)) for _ in range(reps))
        with FlopCounterMode(display=False, custom_mapping=cpu_attention) as counter:
            model(x, t, labels)
    return seconds, counter.get_total_flops() / 1e9


CATEGORIES = {
    "attention": ("scaled_dot_product", "flash_attention", "softmax", "bmm"),
    "convolution": ("conv",),
    "norm": ("group_norm", "layer_norm"),
    "linear": ("addmm", "aten::mm", "linear"),
}


def pass_profile(model, dtype: str, kv_stride: int = 1) -> dict[str, float]:
    """Milliseconds of one UNet pass per kind of operator (torch.profiler, self time of the leaf operators)."""
    from torch.profiler import ProfilerActivity, profile

    x = torch.randn(1, 1, *model.config.grid)
    t = torch.full((1,), 500, dtype=torch.long)
    labels = model.labels(1, 1, "cpu")
    with torch.no_grad(), _precision(dtype, model), _kv(model, kv_stride):
        model(x, t, labels)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            model(x, t, labels)
    out = dict.fromkeys((*CATEGORIES, "elementwise and copies"), 0.0)
    for event in prof.key_averages():
        kind = next((k for k, keys in CATEGORIES.items() if any(s in event.key for s in keys)), None)
        out[kind or "elementwise and copies"] += event.self_cpu_time_total / 1000
    return out


def prediction_error(model, y0: torch.Tensor, timesteps=(263, 158, 53)) -> dict[str, dict[str, float]]:
    """How far bf16 and fewer keys move the UNet's output from exact fp32 on the sample noised into the product's
    window: relative L2 change of the conditional v, and of the guidance direction cond - uncond (which w
    multiplies), the worst over ``timesteps``."""
    from ControlCGLib.sampling.schedule import Schedule

    schedule = Schedule(model.config.schedule)
    noise = torch.randn((1, 1, *model.config.grid), generator=torch.Generator().manual_seed(0))
    y = y0[None, None]

    def v(x, t, label, dtype, kv):
        with torch.no_grad(), _precision(dtype, model), _kv(model, kv):
            return model(x, torch.full((1,), t, dtype=torch.long), model.labels(label, 1)).float()

    out = {name: {"v": 0.0, "guidance": 0.0} for name in ("bf16", "kv2", "bf16+kv2")}
    for t in timesteps:
        x = schedule.q_sample(y, t, noise)
        cond, uncond = v(x, t, 1, "fp32", 1), v(x, t, model.null_class, "fp32", 1)
        for name, (dtype, kv) in {"bf16": ("bf16", 1), "kv2": ("fp32", 2), "bf16+kv2": ("bf16", 2)}.items():
            c, u = v(x, t, 1, dtype, kv), v(x, t, model.null_class, dtype, kv)
            moved = {"v": (c - cond).norm() / cond.norm(), "guidance": ((c - u) - (cond - uncond)).norm()}
            moved["guidance"] = moved["guidance"] / (cond - uncond).norm()
            for k, value in moved.items():
                out[name][k] = max(out[name][k], float(value))
    return out


def _batched_pass(model, precision: str, reps: int = 3) -> float:
    x = torch.randn(2, 1, *model.config.grid)
    t = torch.full((2,), 500, dtype=torch.long)
    labels = torch.cat([model.labels(1, 1, "cpu"), model.labels(model.null_class, 1, "cpu")])
    with torch.no_grad(), _precision(precision, model):
        model(x, t, labels)
        return min(_timed(lambda: model(x, t, labels)) for _ in range(reps))


def rejected_changes(model) -> dict:
    """Library settings tried on the product's pass (bf16, kv stride 2), each against the plain pass."""
    plain, _ = forward_cost(model, "bf16", kv_stride=2)
    out = {"batch cond+uncond (bf16)": f"{_batched_pass(model, 'bf16') * 1000:.0f} ms vs 2 x {plain * 1000:.0f} ms"}
    fp32, _ = forward_cost(model, "fp32", kv_stride=2)
    model.to(memory_format=torch.channels_last_3d)
    cl, _ = forward_cost(model, "fp32", kv_stride=2)
    model.to(memory_format=torch.contiguous_format)
    out["channels_last_3d in fp32 (kept in bf16)"] = f"{cl * 1000:.0f} ms vs {fp32 * 1000:.0f} ms"
    flash = [m for m in model.modules() if hasattr(m, "use_flash_attention")]
    for m in flash:
        m.use_flash_attention = False
    unfused, _ = forward_cost(model, "bf16")
    for m in flash:
        m.use_flash_attention = True
    exact, _ = forward_cost(model, "bf16")
    out["MONAI's unfused attention (bf16, exact keys)"] = f"{unfused * 1000:.0f} ms vs fused {exact * 1000:.0f} ms"
    return out


def compiled_pass(model) -> dict:
    """torch.compile (inductor) on the product's pass: seconds to compile (the first call) and per pass after."""
    from ControlCGLib.model.networks import ClassConditionalUNet

    plain, _ = forward_cost(model, "bf16", kv_stride=2)
    twin = ClassConditionalUNet(model.config).eval()
    twin.load_state_dict(model.state_dict())
    twin.unet = torch.compile(twin.unet)
    x, t, labels = torch.randn(1, 1, *model.config.grid), torch.full((1,), 500, dtype=torch.long), model.labels(1, 1)
    with torch.no_grad(), _precision("bf16", twin), _kv(twin, 2):
        first = _timed(lambda: twin(x, t, labels))
        after = min(_timed(lambda: twin(x, t, labels)) for _ in range(3))
    return {"compile_seconds": first, "pass_seconds": after, "plain_pass_seconds": plain}


def end_to_end(threads: int, model: Path | None = None, intensity_row: bool = True) -> dict:
    """Wall time of the command a user runs (process start, loading, registration, sampling, writing): the first
    run on a machine (no memory estimate cached yet), the next one, and the panel's six-w sweep, shown as a
    deformation (the product's) and as an intensity change (what the deformation costs). ``model``: another
    diffusion model folder than the embedded one (asked with the embedded classifier)."""
    import subprocess
    import sys
    import tempfile

    from ControlCGLib.defaults import SLICER_SWEEP
    from ControlCGLib.resources import classifier_dir, sample_scan

    chosen = [] if model is None else ["--model", str(model), "--classifier", str(classifier_dir())]
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CONTROLCG_CACHE_DIR": f"{tmp}/cache"}
        runs = [
            ("first run, one w", ["4"], []),
            ("next run, one w", ["4"], []),
            ("six w", SLICER_SWEEP, []),
        ]
        if intensity_row:
            runs.append(("six w, intensity change", SLICER_SWEEP, ["--change", "intensity"]))  # the deformation apart
        for name, ws, extra in runs:
            cmd = [sys.executable, "-m", "ControlCGLib.cli", "counterfactual", str(sample_scan()), "--target", "AD"]
            cmd += ["--w", *map(str, ws), "--out", f"{tmp}/{len(out)}", "--threads", str(threads), *chosen, *extra]
            out[name] = _timed(lambda c=cmd: subprocess.run(c, check=True, capture_output=True, env=env))
    return out


def grid_presets(threads: int, model_2mm: Path | None) -> dict:
    """The embedded 4 mm preset beside the 2 mm one, measured in one run: one product pass (bf16, kv stride 2) of
    each preset's network (untrained weights suffice for speed), and, given a trained ``cpu-2mm`` model folder, the
    command a user runs end to end with each."""
    from ControlCGLib.model.config import preset
    from ControlCGLib.model.networks import ClassConditionalUNet, count_parameters

    out: dict = {"pass": {}}
    for name in ("cpu", "cpu-2mm"):
        network = ClassConditionalUNet(preset(name)).eval()
        seconds, gflop = forward_cost(network, "bf16", kv_stride=2)
        out["pass"][name] = {"seconds": seconds, "gflop": gflop, "parameters": count_parameters(network)}
    out["pass_ratio"] = out["pass"]["cpu-2mm"]["seconds"] / out["pass"]["cpu"]["seconds"]
    if model_2mm is not None:
        out["end_to_end"] = {
            "cpu": end_to_end(threads, intensity_row=False),
            "cpu-2mm": end_to_end(threads, model_2mm, intensity_row=False),
        }
        out["end_to_end_ratio"] = {
            k: out["end_to_end"]["cpu-2mm"][k] / out["end_to_end"]["cpu"][k] for k in out["end_to_end"]["cpu"]
        }
    return out


def _print_presets(report: dict) -> None:
    for name, r in report["pass"].items():
        print(f"preset {name}: one product pass {r['seconds'] * 1000:.0f} ms, {r['gflop']:.0f} GFLOP, "
              f"{r['parameters'] / 1e6:.2f} M parameters")  # fmt: skip
    print(f"pass_ratio_2mm_vs_4mm={report['pass_ratio']:.2f}")
    for name, ratio in report.get("end_to_end_ratio", {}).items():
        a, b = report["end_to_end"]["cpu"][name], report["end_to_end"]["cpu-2mm"][name]
        print(f"end to end ({name}): 4 mm {a:.1f} s, 2 mm {b:.1f} s, x{ratio:.2f}")


def paper_configuration() -> dict:
    """The paper preset (80 x 96 x 80, untrained weights: speed only): one bf16 pass (contiguous weights, and as the
    product holds them), and the passes of a counterfactual with injection on (the reference pass every step;
    trajectories share the first step's passes) -- as the paper samples (pure noise, unpaired) and as the product
    does (30 % start, paired), on the 20- and 50-step grids."""
    from ControlCGLib.model.config import preset
    from ControlCGLib.model.networks import ClassConditionalUNet

    paper = ClassConditionalUNet(preset("paper")).eval()
    out = {"pass": {}}
    x = torch.randn(1, 1, *paper.config.grid)
    t, labels = torch.full((1,), 500, dtype=torch.long), paper.labels(1, 1)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        paper(x, t, labels)
        out["pass"]["bf16 contiguous"] = _timed(lambda: paper(x, t, labels))
    for kv in (1, 2):
        seconds, gflop = forward_cost(paper, "bf16", reps=1, kv_stride=kv)
        out["pass"][f"bf16 kv{kv}"] = seconds
        out[f"gflop_kv{kv}"] = gflop
    out["passes"] = {}
    for grid in (20, 50):
        for name, strength, paired in (("paper: pure noise, unpaired", 1.0, False), ("product: 30 %, paired", 0.3, 1)):
            steps = max(1, round(grid * strength))
            per_step, first = (4, 3) if paired else (2, 2)
            out["passes"][f"{name}, {grid}-step grid"] = steps + first + per_step * (steps - 1)
    return out


def _load_quality(path: Path | None) -> dict:
    if path is None or not Path(path).exists():
        return {}
    return json.loads(Path(path).read_text())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 w values; no end to end, no paper grid")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quality", type=Path, default=QUALITY, help="held-out quality per setting (JSON)")
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    p.add_argument("--try-compile", action="store_true", help="also time torch.compile on the pass (~1 min)")
    p.add_argument(
        "--presets",
        action="store_true",
        help="only the 4 mm and 2 mm presets side by side (kept under 'presets' in --out, the rest of it unchanged)",
    )
    p.add_argument("--model-2mm", type=Path, default=None, help="a trained cpu-2mm model folder, for end to end")
    args = p.parse_args()
    if args.presets:
        torch.set_num_threads(args.threads)
        presets = grid_presets(args.threads, args.model_2mm)
        _print_presets(presets)
        if args.out:
            old = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps({**old, "presets": presets}, indent=2) + "\n")
        return

    ws = [2.0, 4.0, 6.0] if args.quick else [2.0, 4.0, 6.0, 8.0]
    torch.set_num_threads(args.threads)
    model, y0 = _setup(args.threads)
    ceiling = {"fp32": matmul_ceiling(torch.float32), "bf16": matmul_ceiling(torch.bfloat16)}
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    extras = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    device = (
        f"CPU, {os.cpu_count()} cores ({', '.join([platform.machine(), *extras])}), {args.threads} threads, "
        f"torch {torch.__version__}"
    )
    report: dict = {"device": device, "ws": ws, "ceiling_gflops": ceiling, "forward": {}, "profile": {}}
    print(f"device: {device}")
    print(f"matmul ceiling: fp32 {ceiling['fp32']:.0f} GFLOP/s, bf16 {ceiling['bf16']:.0f} GFLOP/s")
    for dtype, kv in (("fp32", 1), ("bf16", 1), ("bf16", 2)):
        seconds, gflop = forward_cost(model, dtype, kv_stride=kv)
        share = gflop / seconds / ceiling[dtype]
        report["forward"][f"{dtype}-kv{kv}"] = {"seconds": seconds, "gflop": gflop, "ceiling_share": share}
        profile = pass_profile(model, dtype, kv)
        report["profile"][f"{dtype}-kv{kv}"] = profile
        parts = ", ".join(f"{k} {v:.0f}" for k, v in profile.items())
        print(f"UNet pass {dtype} kv{kv}: {seconds * 1000:.0f} ms, {gflop:.1f} GFLOP, {100 * share:.0f} % of the "
              f"{dtype} ceiling; ms by kind: {parts}")  # fmt: skip

    report["prediction_error"] = prediction_error(model, y0)
    for name, e in report["prediction_error"].items():
        print(f"{name} vs exact fp32: v moves {100 * e['v']:.2f} %, the guidance direction {100 * e['guidance']:.1f} %")
    quality = _load_quality(args.quality)
    runs = {v.name: _run(v, ws, args.threads, y0) for v in LADDER}
    naive = runs[LADDER[0].name]
    report["variants"] = {}
    print(f"\nthe paired, blended counterfactual toward AD of the sample, sweep w = {ws}")
    for v in LADDER:
        r = runs[v.name]
        kv_stride = _sampling(v).kv_stride
        gflop = r["passes"] * report["forward"][f"{v.precision}-kv{kv_stride}"]["gflop"]
        share = gflop / r["seconds"] / ceiling[v.precision]
        diff = max(float(np.abs(r["changes"][w] - naive["changes"][w]).max()) for w in ws)
        q = quality.get("settings", {}).get(v.quality)
        report["variants"][v.name] = {
            **{k: r[k] for k in ("seconds", "passes", "single_w_seconds", "peak_mib")},
            "gflop": gflop, "ceiling_share": share, "max_abs_change_diff_vs_naive": diff,
            "speedup_vs_naive": naive["seconds"] / r["seconds"], "held_out": q,
        }  # fmt: skip
        held = "not measured" if q is None else ", ".join(f"{k} {q[k]:.3f}" for k in ("ssim_true_cf", "auroc", "dice"))
        if q is not None:
            held += f", flip (judge) {q['flip_judge']:.2f}"
        print(f"{v.name:26s} {r['seconds']:6.1f} s, {r['passes']:3d} passes, {gflop:5.0f} GFLOP, "
              f"{100 * share:3.0f} % of the {v.precision} ceiling, peak {r['peak_mib']:.0f} MiB, "
              f"x{naive['seconds'] / r['seconds']:.2f}; a new w alone {r['single_w_seconds']:.1f} s; "
              f"held out: {held}")  # fmt: skip
    if quality:
        print(f"held-out quality: {quality.get('measured', '')}")

    if not args.quick:
        report["rejected"] = rejected_changes(model)
        for name, r in report["rejected"].items():
            print(f"tried, not kept: {name}: {r}")
        if args.try_compile:
            c = report["compiled"] = compiled_pass(model)
            print(f"tried, not kept: torch.compile (inductor): {c['compile_seconds']:.0f} s to compile, then "
                  f"{c['pass_seconds'] * 1000:.0f} ms vs {c['plain_pass_seconds'] * 1000:.0f} ms a pass")  # fmt: skip
        report["end_to_end"] = end_to_end(args.threads)
        for name, seconds in report["end_to_end"].items():
            print(f"end to end, controlcg counterfactual <sample> --target AD ({name}): {seconds:.1f} s")
        paper = paper_configuration()
        report["paper"] = paper
        passes = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in paper["pass"].items())
        print(f"paper configuration, one pass: {passes} ({paper['gflop_kv1']:.0f} / {paper['gflop_kv2']:.0f} GFLOP)")
        s = paper["pass"]["bf16 kv2"]
        for name, n in paper["passes"].items():
            print(f"paper configuration, a counterfactual ({name}): {n} passes ~ {n * s / 60:.1f} min")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    product = report["variants"][LADDER[-1].name]
    print(f"speedup_vs_naive={product['speedup_vs_naive']:.2f}")


if __name__ == "__main__":
    main()

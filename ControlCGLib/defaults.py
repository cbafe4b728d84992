"""The product's defaults and the protocol between the command line and its callers, in one place.

The CLI, the Slicer bridge, the Slicer panel, the sampler's settings and the evaluation read every default and every
validity range from here, so that a value cannot differ between them. Imports nothing heavy (Slicer's panel reads it
before torch exists).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Setting:
    """A user-facing number: its default and its one validity range (inclusive)."""

    name: str
    default: float
    low: float
    high: float
    integer: bool = False

    @property
    def range(self) -> tuple[float, float]:
        return (self.low, self.high)

    def check(self, value, what: str | None = None):
        """``value`` if it lies in the range, else a ValueError naming the setting, the value and the range."""
        label = what or self.name
        if self.integer and (isinstance(value, bool) or int(value) != value):
            raise ValueError(f"{label} must be a whole number, got {value!r}")
        if not self.low <= value <= self.high:
            raise ValueError(f"{label} must lie in [{self.low:g}, {self.high:g}], got {value:g}")
        return value


# The product's guidance scale (docs/method/README.md, "Decisions the paper leaves open"). The range is the
# Slicer slider's and the one the CLI accepts: beyond 10 the embedded model's outputs saturate
# (benchmarks/embedded_quality.py).
W = Setting("w", 4.0, 0.0, 10.0)
# The product starts from the input noised to 30 % of the trajectory rather than from pure noise (1, the paper):
# measured on held-out simulated subjects with the embedded model it keeps more of the input (SSIM) and matches the true
# counterfactual better at the same flip rate, in 30 % of the time (docs/training.md). Below 0.05 nothing changes.
START_STRENGTH = Setting("start strength", 0.3, 0.05, 1.0)
PAPER_START_STRENGTH = 1.0  # the paper's start: pure noise (the toy demo and the evaluation's "from noise" rows)
# The grid from pure noise; the product runs its last 30 % (6 steps). Measured on held-out anatomies kept apart from the
# reported ones (benchmarks/results/quality_selection.json; 4 subjects x 2 seeds, w = 4, paired + blended): a 20-step
# grid scored saliency AUROC 0.908 / Dice 0.584 / SSIM to the true cf 0.984 against 0.870 / 0.415 / 0.984 for the
# 50-step grid (15 steps), flip rate 1.00 vs 0.75 (explained), 2.4x faster.
STEPS = Setting("steps", 20, 1, 1000, integer=True)
# Attention injection (Eq. 8): "auto" = on for a model of the paper preset, off for any other (the embedded cpu model).
# Measured on held-out anatomies (docs/method/README.md "Attention injection, measured"; docs/evaluation/cohort_v2, the
# ours-injection row): with self-attention at the paper's 8 mm tokens, paired counterfactuals with and without injection
# agree to three decimals in every metric, while injection costs a reference pass per step; the library's
# SamplingConfig keeps the paper's injection on.
INJECTION = "auto"  # one of sampling/settings.INJECTIONS
# Mask-guided blending (sampling/blending.py): outside the region that changes, the input replaces every trajectory
# during sampling. Measured on held-out anatomies kept apart from the reported ones (docs/method/README.md;
# docs/evaluation/report.md holds the ours-no-blend ablation on the reported ones): saliency AUROC 0.872 ->
# 0.908, Dice 0.558 -> 0.584, SSIM to the true counterfactual 0.973 -> 0.984 at the same flip rate.
BLEND = True
# How the change is shown (imaging/deformation.py): "deformation" warps the patient's own scan by the map that turns the
# source-class output into the target-class output (its own intensities, its own resolution, volumes a radiologist
# reads); "intensity" adds the two outputs' difference to the scan. Measured on the validation subjects in
# docs/method/deformation.md; the evaluation keeps the intensity change as the ours-intensity row.
CHANGES = ("deformation", "intensity")
CHANGE = "deformation"
# The step of the sampling loop and the spacing of its grid (sampling/schedule.py). DPM-Solver++(2M) on a log-SNR grid
# was measured against DDIM on held-out anatomies across step counts and not chosen (docs/performance.md).
SOLVER = "ddim"  # one of sampling/settings.CLI_SOLVERS
SPACING = "time"  # one of sampling/settings.SPACINGS
# Keys and values of the self-attention layers with >= 4096 tokens (the embedded model's three 8 mm layers) averaged
# over kv_stride^3 blocks (sampling/token_downsampling.py); 1 = exact attention, the library's SamplingConfig default.
# Chosen on held-out anatomies kept apart from the reported ones (benchmarks/results/quality_selection.json, 4 subjects
# x 2 seeds, w = 4): AUROC 0.908 / Dice 0.583 / SSIM to the true cf 0.984 at stride 2 against 0.908 / 0.584 / 0.984
# exact (fp32; bf16 alike), a UNet pass 2.2x faster (275 -> 124 ms bf16, benchmarks/results/speed_cpu.json).
KV_STRIDE = Setting("kv stride", 2, 1, 4, integer=True)
SEED = Setting("seed", 0, 0, 2**31 - 1, integer=True)
# changes below this fraction of the largest one are transparent: at 0.05 the embedded model's redrawn noise (median
# |change| in the brain ~9 % of the window on the sample) covered the whole brain; 0.2 keeps the anatomy
SALIENCY_THRESHOLD = Setting("saliency threshold", 0.2, 0.0, 0.5)
OVERLAY_OPACITY = Setting("overlay opacity", 0.6, 0.0, 1.0)

PRECISIONS = ("auto", "fp32", "bf16")
PRECISION = "auto"  # bfloat16 where the hardware computes it natively (commands/common.py: choose_precision)
DEVICES = ("auto", "cpu", "cuda")
DEVICE = "auto"

DEMO_SWEEP = (0.0, 2.0, 4.0, 6.0)  # `controlcg demo`: the trade-off at a glance
SLICER_SWEEP = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0)  # the panel's sweep field: the whole slider in one run
EVALUATION_SWEEP = (0.0, 1.0, 2.0, 4.0, 6.0, 8.0)

# --- the protocol between `controlcg counterfactual` and whoever launched it (the Slicer panel) ---------------------
EXIT_OK = 0
EXIT_FAILED = 1  # the computation failed (a traceback with CONTROLCG_DEBUG=1)
EXIT_REFUSED = 2  # bad input or settings: the `error:` line says what to change
EXIT_CANCELLED = 130  # the conventional code of an interrupted command; the Slicer panel reads it as "cancelled"
# One flushed line per event (progress.py writes and parses them): "controlcg-progress stage=sampling step=3/15".
PROGRESS_PREFIX = "controlcg-progress"
# The stages in the order a run announces them, each with the share of the whole run done when it begins; sampling (the
# long part) fills 0.1 to 0.9 step by step.
STAGES = {"preparing": 0.0, "sampling": 0.1, "mapping back": 0.9, "verdicts": 0.95, "writing": 0.97, "done": 1.0}


def w_key(w: float) -> str:
    """The one spelling of a w in keys and file names: 4.0 -> "4", 2.5 -> "2.5"."""
    return f"{float(w):g}"

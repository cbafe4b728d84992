"""How a counterfactual is sampled: the settings shared by the command line, Slicer and the evaluation.

Frozen dataclasses that validate on construction and go through the same JSON round trip as the model configuration
(:func:`~ControlCGLib.model.config.to_dict`), so a run records exactly what it did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from ..defaults import KV_STRIDE, PAPER_START_STRENGTH, START_STRENGTH, STEPS
from ..model.config import NOISE_KINDS, ConfigError, NoiseKind
from .blending import BlendConfig

Method = Literal["ddim", "ddpm", "dpm++2m"]  # schedule.py has the step of each
ReferenceNoise = Literal["fixed", "fresh"]
Spacing = Literal["time", "log-snr"]  # the grid: even in timesteps, or even in half the log SNR (schedule.py)
Precision = Literal["fp32", "bf16"]  # "auto" is the CLI's choice (commands/common.py), resolved before this
SAMPLING_METHODS: tuple[str, ...] = get_args(Method)
REFERENCE_NOISE: tuple[str, ...] = get_args(ReferenceNoise)


@dataclass(frozen=True)
class InjectionConfig:
    """Which self-attention layers inject the reference (groups ``down``/``mid``/``up`` or module paths), during
    which part of the trajectory (``window``: fractions of the steps, from the first), and whether y_t is noised
    with one fixed noise for the whole run or fresh noise at every step (Eq. 2)."""

    layers: tuple[str, ...] = ("down", "mid", "up")
    window: tuple[float, float] = (0.0, 1.0)
    reference_noise: ReferenceNoise = "fixed"

    def __post_init__(self):
        if not self.layers:
            raise ConfigError("injection.layers must name at least one layer or group")
        lo, hi = self.window
        if not 0 <= lo < hi <= 1:
            raise ConfigError(f"injection.window must satisfy 0 <= start < stop <= 1, got {self.window}")
        if self.reference_noise not in REFERENCE_NOISE:
            raise ConfigError(
                f"injection.reference_noise must be one of {REFERENCE_NOISE}, got {self.reference_noise!r}"
            )

    def active(self, index: int, total: int) -> bool:
        """Whether step ``index`` (0-based) of ``total`` lies inside the window."""
        frac = index / total
        return self.window[0] <= frac < self.window[1]


def product_injection(choice: str, model_name: str) -> InjectionConfig | None:
    """The injection a product run uses: ``choice`` is one of ``defaults.INJECTIONS``; "auto" injects only for a
    model of the paper preset, where the paper measured it (defaults.INJECTION says why not elsewhere)."""
    from ..defaults import INJECTIONS

    if choice not in INJECTIONS:
        raise ConfigError(f"injection must be one of {INJECTIONS}, got {choice!r}")
    if choice == "on" or (choice == "auto" and model_name == "paper"):
        return InjectionConfig()
    return None


@dataclass(frozen=True)
class SamplingConfig:
    """How a counterfactual is sampled. ``start_strength`` 1 starts from pure noise (the paper); below 1 the run
    starts from the input noised to that fraction of the trajectory (fewer steps, closer to the input)."""

    steps: int = STEPS.default
    method: Method = "ddim"
    spacing: Spacing = "time"
    eta: float = 0.0
    start_strength: float = PAPER_START_STRENGTH  # the library samples as the paper does; the product passes 0.3
    noise: NoiseKind = "gaussian"
    injection: InjectionConfig | None = field(default_factory=InjectionConfig)
    blend: BlendConfig | None = None  # mask-guided blending of the input (blending.py); the product passes it
    precision: Precision = "fp32"  # "bf16": UNet passes under bfloat16 autocast (the scheduler stays fp32)
    kv_stride: int = 1  # > 1: large self-attention layers' keys averaged over stride^3 blocks (token_downsampling)

    def __post_init__(self):
        for setting, value in ((STEPS, self.steps), (START_STRENGTH, self.start_strength)):
            try:
                setting.check(value, "sampling." + setting.name.replace(" ", "_"))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        try:
            KV_STRIDE.check(self.kv_stride, "sampling.kv_stride")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        exact = get_args(Precision)
        if self.precision not in exact:
            raise ConfigError(f"sampling.precision must be one of {exact}, got {self.precision!r}")
        if self.method not in SAMPLING_METHODS:
            raise ConfigError(f"sampling.method must be one of {SAMPLING_METHODS}, got {self.method!r}")
        if self.spacing not in get_args(Spacing):
            raise ConfigError(f"sampling.spacing must be one of {get_args(Spacing)}, got {self.spacing!r}")
        if self.eta < 0:
            raise ConfigError(f"sampling.eta must be >= 0, got {self.eta}")
        if self.noise not in NOISE_KINDS:
            raise ConfigError(f"sampling.noise must be one of {NOISE_KINDS}, got {self.noise!r}")
        if self.method != "ddim" and self.eta != 0:
            kind = "always stochastic" if self.method == "ddpm" else "deterministic"
            raise ConfigError(f"sampling.eta applies to DDIM only; {self.method} steps are {kind} (leave eta at 0)")

    @property
    def stochastic(self) -> bool:
        return self.method == "ddpm" or self.eta > 0

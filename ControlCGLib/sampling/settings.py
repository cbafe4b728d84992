"""How a counterfactual is sampled: the settings shared by the command line, Slicer and the evaluation.

Frozen dataclasses that validate on construction and go through the same JSON round trip as the model configuration
(:func:`~ControlCGLib.model.config.to_dict`), so a run records exactly what it did. Torch-free: the command line and
the Slicer panel read the choices from here before torch is imported.

:func:`product_sampling` is the one place where the product's sampling is assembled from defaults.py: the command
line, the evaluation (with exact arithmetic) and the speed benchmark all ask it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from .. import defaults
from ..defaults import KV_STRIDE, PAPER_START_STRENGTH, START_STRENGTH, STEPS
from ..model.config import NOISE_KINDS, ConfigError, NoiseKind

Solver = Literal["ddim", "ddpm", "dpm++2m"]  # solvers.py has the step of each
Spacing = Literal["time", "log-snr"]  # the grid: even in timesteps, or even in half the log SNR (schedule.py)
Precision = Literal["fp32", "bf16"]  # "auto" is the CLI's choice (commands/common.py), resolved before this
ReferenceNoise = Literal["fixed", "fresh"]
InjectionChoice = Literal["auto", "on", "off"]  # "auto": on for a model of the paper preset only (defaults.INJECTION)
SOLVERS: tuple[str, ...] = get_args(Solver)
# The solvers a user picks on the command line: the strided DDPM posterior is stochastic and needs the full grid, a
# library option for the tests and the toy, never the product's.
CLI_SOLVERS: tuple[str, ...] = ("ddim", "dpm++2m")
SPACINGS: tuple[str, ...] = get_args(Spacing)
UNET_PRECISIONS: tuple[str, ...] = get_args(Precision)  # defaults.PRECISIONS adds the CLI's "auto"
REFERENCE_NOISE: tuple[str, ...] = get_args(ReferenceNoise)
INJECTIONS: tuple[str, ...] = get_args(InjectionChoice)


def _check_choice(value, choices: tuple[str, ...], what: str) -> None:
    if value not in choices:
        raise ConfigError(f"{what} must be one of {choices}, got {value!r}")


@dataclass(frozen=True)
class BlendConfig:
    """Mask-guided blending (blending.py). ``threshold``: share of the largest smoothed |change| that counts as
    changing; ``sigma``: smoothing in model voxels; ``start``: share of the steps run before the first blend (the
    first predictions are too rough)."""

    threshold: float = 0.2
    sigma: float = 1.0
    start: float = 0.3

    def __post_init__(self):
        if not 0 < self.threshold < 1:
            raise ConfigError(f"blend.threshold must be in (0, 1), got {self.threshold}")
        if self.sigma <= 0:
            raise ConfigError(f"blend.sigma must be > 0, got {self.sigma}")
        if not 0 <= self.start < 1:
            raise ConfigError(f"blend.start must be in [0, 1), got {self.start}")


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
        _check_choice(self.reference_noise, REFERENCE_NOISE, "injection.reference_noise")

    def active(self, index: int, total: int) -> bool:
        """Whether step ``index`` (0-based) of ``total`` lies inside the window."""
        frac = index / total
        return self.window[0] <= frac < self.window[1]


def product_injection(choice: str, model_name: str) -> InjectionConfig | None:
    """The injection a product run uses: ``choice`` is one of :data:`INJECTIONS`; "auto" injects only for a model of
    the paper preset, where the paper measured it (defaults.INJECTION says why not elsewhere)."""
    _check_choice(choice, INJECTIONS, "injection")
    if choice == "on" or (choice == "auto" and model_name == "paper"):
        return InjectionConfig()
    return None


@dataclass(frozen=True)
class SamplingConfig:
    """How a counterfactual is sampled. ``start_strength`` 1 starts from pure noise (the paper); below 1 the run
    starts from the input noised to that fraction of the trajectory (fewer steps, closer to the input). The library's
    defaults sample as the paper does; :func:`product_sampling` gives the product's."""

    steps: int = STEPS.default
    solver: Solver = "ddim"
    spacing: Spacing = "time"
    eta: float = 0.0
    start_strength: float = PAPER_START_STRENGTH
    noise: NoiseKind = "gaussian"
    injection: InjectionConfig | None = field(default_factory=InjectionConfig)
    blend: BlendConfig | None = None  # mask-guided blending of the input (blending.py)
    precision: Precision = "fp32"  # "bf16": UNet passes under bfloat16 autocast (the solver stays fp32)
    kv_stride: int = 1  # > 1: large self-attention layers' keys averaged over stride^3 blocks (token_downsampling)

    def __post_init__(self):
        for setting, value in ((STEPS, self.steps), (START_STRENGTH, self.start_strength), (KV_STRIDE, self.kv_stride)):
            try:
                setting.check(value, "sampling." + setting.name.replace(" ", "_"))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        _check_choice(self.precision, UNET_PRECISIONS, "sampling.precision")
        _check_choice(self.solver, SOLVERS, "sampling.solver")
        _check_choice(self.spacing, SPACINGS, "sampling.spacing")
        _check_choice(self.noise, NOISE_KINDS, "sampling.noise")
        if self.eta < 0:
            raise ConfigError(f"sampling.eta must be >= 0, got {self.eta}")
        if self.solver != "ddim" and self.eta != 0:
            kind = "always stochastic" if self.solver == "ddpm" else "deterministic"
            raise ConfigError(f"sampling.eta applies to DDIM only; {self.solver} steps are {kind} (leave eta at 0)")

    @property
    def stochastic(self) -> bool:
        return self.solver == "ddpm" or self.eta > 0


def product_sampling(
    model_name: str,
    *,
    exact: bool = False,
    steps: int | None = None,
    solver: str | None = None,
    spacing: str | None = None,
    start_strength: float | None = None,
    kv_stride: int | None = None,
    precision: str | None = None,
    injection: str | None = None,
    blend: bool | None = None,
) -> SamplingConfig:
    """The sampling the product runs for a model of preset ``model_name``: every setting from defaults.py, read when
    called. ``exact``: the same with exact arithmetic (fp32, every key attended), as the evaluation measures it. Each
    keyword given (not None) replaces one setting, in the command line's words: ``injection`` a choice of
    :data:`INJECTIONS`, ``blend`` on or off, ``precision`` already resolved for the device (commands/common.py's
    ``choose_precision``; unset: fp32)."""
    chosen = {
        "steps": int(defaults.STEPS.default),
        "solver": defaults.SOLVER,
        "spacing": defaults.SPACING,
        "start_strength": defaults.START_STRENGTH.default,
        "kv_stride": 1 if exact else int(defaults.KV_STRIDE.default),
        "precision": "fp32",
        "injection": defaults.INJECTION,
        "blend": defaults.BLEND,
    }
    given = {
        "steps": steps,
        "solver": solver,
        "spacing": spacing,
        "start_strength": start_strength,
        "kv_stride": kv_stride,
        "precision": precision,
        "injection": injection,
        "blend": blend,
    }
    chosen.update({k: v for k, v in given.items() if v is not None})
    chosen["injection"] = product_injection(chosen["injection"], model_name)
    chosen["blend"] = BlendConfig() if chosen["blend"] else None
    return SamplingConfig(**chosen)

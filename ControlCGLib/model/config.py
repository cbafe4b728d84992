"""Typed configuration of a ControlCG model, stored as JSON beside its weights.

The dataclass that builds the model is the JSON that ships with it (diffusers' ``register_to_config`` idea): a model
folder's config.json is written by :func:`write_model_config` and read by :func:`read_model_config` (torch-free, so
the Slicer panel reads it too), which rebuilds the same dataclass; unknown keys, kinds and format versions are refused
with a message naming them.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

#: Version of the JSON layout written by :func:`write_model_config`. Readers refuse anything newer.
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"  # in every model folder, beside the weights

BETA_SCHEDULES = ("linear_beta", "scaled_linear_beta", "sigmoid_beta", "cosine")
PREDICTION_TYPES = ("v",)
NoiseKind = Literal["gaussian", "pyramid"]
NOISE_KINDS: tuple[str, ...] = get_args(NoiseKind)


class ConfigError(ValueError):
    """A configuration that cannot describe a valid model; the message names the offending field."""


def _check_version(version, what: str) -> None:
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise ConfigError(
            f"{what} has format_version {version}, newer than this ControlCG understands ({FORMAT_VERSION}); "
            "update ControlCG to load it"
        )


def _check_grid_and_classes(grid, class_names, what: str) -> None:
    if len(grid) != 3 or any(g < 1 for g in grid):
        raise ConfigError(f"{what}grid must be three positive sizes (D, H, W), got {grid}")
    if len(class_names) < 2 or len(set(class_names)) != len(class_names):
        raise ConfigError(f"{what}class_names must hold at least two distinct names, got {class_names}")


@dataclass(frozen=True)
class ScheduleConfig:
    """Forward-process noise schedule (Eq. 1-2). Betas come from MONAI's ``NoiseSchedules`` registry."""

    num_train_timesteps: int = 1000
    beta_schedule: str = "linear_beta"
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    prediction_type: str = "v"

    def __post_init__(self):
        if self.num_train_timesteps < 2:
            raise ConfigError(f"schedule.num_train_timesteps must be >= 2, got {self.num_train_timesteps}")
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ConfigError(f"schedule.beta_schedule must be one of {BETA_SCHEDULES}, got {self.beta_schedule!r}")
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ConfigError(f"schedule needs 0 < beta_start < beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ConfigError(
                f"schedule.prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}"
            )


@dataclass(frozen=True)
class NoiseConfig:
    """Training (and optionally sampling) noise.

    ``pyramid``: white noise plus ``levels`` coarser white fields (each halving the grid) trilinearly up-sampled and
    weighted by ``discount**i``, renormalised to unit variance per sample (see :mod:`ControlCGLib.sampling.noise`).
    """

    kind: NoiseKind = "pyramid"
    discount: float = 0.8
    levels: int = 3

    def __post_init__(self):
        if self.kind not in NOISE_KINDS:
            raise ConfigError(f"noise.kind must be one of {NOISE_KINDS}, got {self.kind!r}")
        if not 0 <= self.discount < 1:
            raise ConfigError(f"noise.discount must be in [0, 1), got {self.discount}")
        if self.levels < 0:
            raise ConfigError(f"noise.levels must be >= 0, got {self.levels}")


@dataclass(frozen=True)
class IntensityConfig:
    """Paper preprocessing: min-max with the brain's 99.5th percentile as max, clipped to [0, 1], then mapped
    linearly to ``model_range`` for the network."""

    percentile: float = 99.5
    model_range: tuple[float, float] = (-1.0, 1.0)

    def __post_init__(self):
        if not 50 < self.percentile <= 100:
            raise ConfigError(f"intensity.percentile must be in (50, 100], got {self.percentile}")
        lo, hi = self.model_range
        if not lo < hi:
            raise ConfigError(f"intensity.model_range must be increasing, got {self.model_range}")

    def to_model(self, unit):
        """[0, 1] -> the network's range (numpy arrays and torch tensors alike)."""
        lo, hi = self.model_range
        return unit * (hi - lo) + lo

    def from_model(self, x):
        """The network's range -> [0, 1] (not clipped: a counterfactual may overshoot slightly)."""
        lo, hi = self.model_range
        return (x - lo) / (hi - lo)


@dataclass(frozen=True)
class UNetConfig:
    """Arguments passed to MONAI's ``DiffusionModelUNet`` (3D, one channel in and out, with conditioning)."""

    channels: tuple[int, ...] = (64, 64, 128)
    attention_levels: tuple[bool, ...] = (False, False, True)
    num_res_blocks: int = 1
    norm_num_groups: int = 32
    num_head_channels: int = 32
    transformer_num_layers: int = 1
    use_flash_attention: bool = False

    def __post_init__(self):
        if self.num_res_blocks < 1 or self.transformer_num_layers < 1:
            raise ConfigError("unet.num_res_blocks and unet.transformer_num_layers must be >= 1")
        if not self.channels or any(c < 1 for c in self.channels):
            raise ConfigError(f"unet.channels must be positive sizes, got {self.channels}")
        if len(self.channels) != len(self.attention_levels):
            raise ConfigError(
                f"unet.channels ({len(self.channels)} levels) and unet.attention_levels "
                f"({len(self.attention_levels)} levels) must have the same length"
            )
        bad = [c for c in self.channels if c % self.norm_num_groups]
        if bad:
            raise ConfigError(f"unet.channels {bad} are not divisible by unet.norm_num_groups={self.norm_num_groups}")
        bad = [c for c, a in zip(self.channels, self.attention_levels) if a and c % self.num_head_channels]
        if bad:
            raise ConfigError(
                f"unet.channels {bad} at attention levels are not divisible by "
                f"unet.num_head_channels={self.num_head_channels}"
            )


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a class-conditional diffusion model and to feed it correctly."""

    name: str = "paper"
    grid: tuple[int, int, int] = (80, 96, 80)
    unet: UNetConfig = field(default_factory=UNetConfig)
    class_names: tuple[str, ...] = ("CN", "AD")
    context_dim: int = 128
    class_in_time_embedding: bool = False
    p_uncond: float = 0.15
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    intensity: IntensityConfig = field(default_factory=IntensityConfig)
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        _check_version(self.format_version, "the model configuration")
        _check_grid_and_classes(self.grid, self.class_names, "")
        factor = 2 ** (len(self.unet.channels) - 1)
        if any(g % factor for g in self.grid):
            raise ConfigError(
                f"grid {self.grid} must be divisible by {factor} for a UNet with {len(self.unet.channels)} levels"
            )
        if not 0 <= self.p_uncond < 1:
            raise ConfigError(f"p_uncond must be in [0, 1), got {self.p_uncond}")
        if self.context_dim < 1:
            raise ConfigError(f"context_dim must be positive, got {self.context_dim}")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def null_class(self) -> int:
        """Index of the null class; it is the extra last row of the class-embedding table."""
        return len(self.class_names)

    def class_index(self, name_or_index: str | int) -> int:
        """Index of a class given by name (case-insensitive) or index; raises naming the known classes."""
        if isinstance(name_or_index, int) and not isinstance(name_or_index, bool):
            if 0 <= name_or_index < self.num_classes:
                return name_or_index
        elif isinstance(name_or_index, str):
            lowered = [c.lower() for c in self.class_names]
            if name_or_index.lower() in lowered:
                return lowered.index(name_or_index.lower())
        raise ConfigError(f"unknown class {name_or_index!r}; this model knows {list(self.class_names)}")

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ClassifierConfig:
    """The diagnostic classifier: MONAI's 3D DenseNet (121 layout by default, width configurable for the CPU)."""

    grid: tuple[int, int, int] = (80, 96, 80)
    class_names: tuple[str, ...] = ("CN", "AD")
    init_features: int = 64
    growth_rate: int = 32
    block_config: tuple[int, ...] = (6, 12, 24, 16)
    dropout_prob: float = 0.0
    norm: str = "batch"  # "batch" (DenseNet-121 as published) or "group" (stable with batches of 4 on small grids)
    intensity: IntensityConfig = field(default_factory=IntensityConfig)
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        _check_version(self.format_version, "the classifier configuration")
        if self.norm not in ("batch", "group"):
            raise ConfigError(f"classifier norm must be 'batch' or 'group', got {self.norm!r}")
        _check_grid_and_classes(self.grid, self.class_names, "classifier ")
        if self.init_features < 1 or self.growth_rate < 1 or not self.block_config or min(self.block_config) < 1:
            raise ConfigError("classifier init_features, growth_rate and block_config must be positive")
        if not 0 <= self.dropout_prob < 1:
            raise ConfigError(f"classifier dropout_prob must be in [0, 1), got {self.dropout_prob}")


PRESETS: dict[str, ModelConfig] = {
    # Section 4 of the paper: 3 levels of 64/64/128 channels, attention at the deepest level, 80x96x80. PyTorch's
    # fused attention (same weights): measured 9.2 -> 7.2 s per bf16 pass on the 2-core CPU (benchmarks/speed.py).
    "paper": ModelConfig(unet=UNetConfig(use_flash_attention=True)),
    # Laptop-CPU default: half the paper grid, a quarter of the width. Self-attention at the middle level too, so that
    # its tokens are 8 mm wide like the paper's (20x24x20 of 40x48x40): at the deepest level alone (16 mm) the learned
    # attention is near uniform and injection has nothing to carry. Costs 3.3x per pass on the CPU.
    "cpu": ModelConfig(
        name="cpu",
        grid=(40, 48, 40),
        unet=UNetConfig(
            channels=(16, 32, 64),
            attention_levels=(False, True, True),
            norm_num_groups=8,
            num_head_channels=16,
            use_flash_attention=True,
        ),
        context_dim=64,
    ),
}
# The paper's grid on the CPU: one 2 mm level of 16 channels (no attention) above the ``cpu`` preset's three, which
# stay as they are so that ``--init-from`` carries the trained ``cpu`` weights in (model/warm_start.py). 16 channels,
# not 8: MONAI sizes the time embedding by the first level, and with 8 no stored time projection would fit. One more
# noise level keeps the coarsest noise field 32 mm wide, as the ``cpu`` preset's. Pass times:
# benchmarks/results/speed_cpu.json ("presets").
PRESETS["cpu-2mm"] = PRESETS["cpu"].replace(
    name="cpu-2mm",
    grid=(80, 96, 80),
    unet=dataclasses.replace(
        PRESETS["cpu"].unet, channels=(16, 16, 32, 64), attention_levels=(False, False, True, True)
    ),
    noise=NoiseConfig(levels=4),
)

CLASSIFIER_PRESETS: dict[str, ClassifierConfig] = {
    "paper": ClassifierConfig(grid=(160, 192, 160)),
    # Three dense blocks: with four, a 40x48x40 input shrinks to 1x1x1 before the last block.
    "cpu": ClassifierConfig(grid=(40, 48, 40), init_features=16, growth_rate=8, block_config=(3, 6, 12), norm="group"),
    # An independent judge for the evaluation (other width, other seed): a change that fools only the explained
    # classifier shows up as a flip it sees and this one does not.
    "cpu-judge": ClassifierConfig(
        grid=(40, 48, 40), init_features=24, growth_rate=12, block_config=(3, 6, 12), norm="group"
    ),
}


MODEL_KINDS = {"ModelConfig": ModelConfig, "ClassifierConfig": ClassifierConfig}  # config.json's "kind"


def preset(name: str) -> ModelConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None


# --- JSON round trip ------------------------------------------------------------------------------------------------


def to_dict(config) -> dict[str, Any]:
    """Plain JSON-ready dictionary (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def _checked(value, hint, where: str):
    """``value`` if it has the JSON type ``hint`` asks for (an int is a valid float, a bool is not an int)."""
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
    }.get(hint)
    if ok is not None and not ok(value):
        raise ConfigError(f"{where} must be of type {hint.__name__}, got {value!r}")
    return float(value) if hint is float else value


def from_dict(cls, data: dict[str, Any], _where: str = ""):
    """Rebuild dataclass ``cls`` from ``data``; unknown keys raise, naming them and where they sit."""
    if not isinstance(data, dict):
        raise ConfigError(f"{_where or cls.__name__} must be a JSON object, got {type(data).__name__}")
    _check_version(data.get("format_version"), _where or cls.__name__)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {_where or cls.__name__}; known keys are {sorted(names)}")
    kwargs = {}
    for key, value in data.items():
        hint = hints[key]
        where = f"{_where}.{key}" if _where else key
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            if value is None:
                kwargs[key] = None
                continue
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        if dataclasses.is_dataclass(hint):
            kwargs[key] = from_dict(hint, value, where)
        elif typing.get_origin(hint) is tuple:
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{where} must be a list, got {value!r}")
            item_type = typing.get_args(hint)[0]
            kwargs[key] = tuple(_checked(v, item_type, f"{where}[{i}]") for i, v in enumerate(value))
        else:
            kwargs[key] = _checked(value, hint, where)
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"invalid {_where or cls.__name__}: {exc}") from None


def write_model_config(config, folder: str | Path, provenance: dict[str, Any] | None = None) -> Path:
    """A model folder's config.json: the configuration's kind and fields, then where the weights came from."""
    path = Path(folder) / CONFIG_FILE
    payload = {"kind": type(config).__name__, **to_dict(config), "provenance": provenance or {}}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def read_model_config(folder: str | Path) -> tuple[ModelConfig | ClassifierConfig, dict[str, Any]]:
    """(configuration, provenance) of a model folder, without torch: the one reader of config.json, for the loader,
    the command line and the Slicer panel. Refuses, naming the file, what ControlCG did not write or cannot read."""
    path = Path(folder) / CONFIG_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} is missing: {folder} is not a ControlCG model folder") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object")
    kind = data.pop("kind", None)
    if kind not in MODEL_KINDS:
        raise ConfigError(f"{path} has kind {kind!r}; expected one of {sorted(MODEL_KINDS)}")
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError(f"{path} has format_version {version!r}; ControlCG writes 1 to {FORMAT_VERSION}")
    provenance = data.pop("provenance", {})
    if not isinstance(provenance, dict):
        raise ConfigError(f"{path}: provenance must be a JSON object, got {type(provenance).__name__}")
    try:
        return from_dict(MODEL_KINDS[kind], data), provenance
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None

"""One run of the main job, as a typed, torch-free request: what the command line parses and what the Slicer panel
launches.

``RunRequest.from_args`` reads ``controlcg counterfactual``'s parsed arguments; ``RunRequest.to_argv`` writes the
arguments that parse back to the same request (a test holds the round trip), so the panel builds its command line
from the request alone. A sampling setting left unset (None) is the product's (sampling/settings.product_sampling).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

from .defaults import CHANGE, CHANGES, DEVICE, KV_STRIDE, PRECISION, SEED, START_STRENGTH, STEPS, W, w_key
from .sampling.settings import CLI_SOLVERS, INJECTIONS, SPACINGS

# request field -> command-line option, for the options that take a value
_VALUE_OPTIONS = {
    "series": "--series",
    "model": "--model",
    "classifier": "--classifier",
    "steps": "--steps",
    "solver": "--solver",
    "spacing": "--spacing",
    "kv_stride": "--kv-stride",
    "start_strength": "--start-strength",
    "injection": "--injection",
    "change": "--change",
    "seed": "--seed",
    "threads": "--threads",
    "device": "--device",
    "precision": "--precision",
    "cancel_file": "--cancel-file",
    "pid_file": "--pid-file",
}
# request field -> flag, for the options that are present or not
_FLAGS = {
    "no_classifier": "--no-classifier",
    "preprocessed": "--preprocessed",
    "accept_unusual": "--accept-unusual-scan",
    "overwrite": "--overwrite",
}


@dataclass(frozen=True)
class RunRequest:
    """Everything one run of the main job needs, checked once when it is made."""

    input: str
    target: str
    out: str
    scales: tuple[float, ...] = (W.default,)
    series: str | None = None
    model: str | None = None  # None: the embedded model (and, unless no_classifier, the embedded classifier)
    classifier: str | None = None
    no_classifier: bool = False
    source: str | None = "auto"  # paired run from this class ("auto": the classifier's verdict); None: unpaired
    preprocessed: bool = False
    accept_unusual: bool = False  # explain a scan the checks think is not a whole-brain T1 (warned, recorded)
    # the sampling: None = the product's (defaults.py, through product_sampling)
    steps: int | None = None
    solver: str | None = None
    spacing: str | None = None
    kv_stride: int | None = None
    start_strength: float | None = None
    injection: str | None = None  # one of INJECTIONS; "auto": on for a paper-preset model only
    blend: bool | None = None  # keep the input outside the changing region during sampling (sampling/blending.py)
    change: str = CHANGE  # how the change is shown: the scan deformed, or its intensity change (defaults.CHANGES)
    seed: int = int(SEED.default)
    threads: int = 2
    overwrite: bool = False
    device: str = DEVICE
    precision: str = PRECISION
    montage: bool = True
    progress_lines: bool = False
    cancel_file: str | None = None
    pid_file: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "scales", tuple(float(w) for w in self.scales))
        if not self.scales:
            raise ValueError("no w value to compute")
        for w in self.scales:
            W.check(w, "--w")
        if self.steps is not None:
            STEPS.check(self.steps, "--steps")
        if self.start_strength is not None:
            START_STRENGTH.check(self.start_strength, "--start-strength")
        if self.kv_stride is not None:
            KV_STRIDE.check(self.kv_stride, "--kv-stride")
        SEED.check(self.seed, "--seed")
        for value, choices, option in (
            (self.solver, CLI_SOLVERS, "--solver"),
            (self.spacing, SPACINGS, "--spacing"),
            (self.injection, INJECTIONS, "--injection"),
            (self.change, CHANGES, "--change"),
        ):
            if value is not None and value not in choices:
                raise ValueError(f"{option} must be one of {choices}, got {value!r}")
        if self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")

    def sampling_changes(self) -> dict:
        """The sampling settings this request sets, for product_sampling (unset ones are the product's)."""
        names = ("steps", "solver", "spacing", "kv_stride", "start_strength", "injection", "blend")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    @classmethod
    def from_args(cls, args: argparse.Namespace, input: str) -> RunRequest:
        """The request ``controlcg counterfactual`` (or ``demo``) parsed, on ``input`` (the positional, the option or
        the sample: the command chooses)."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)}
        values.update(
            input=input,
            scales=tuple(args.w),
            source=None if args.source == "none" else args.source,
            accept_unusual=args.accept_unusual_scan,
            montage=not args.no_montage,
            progress_lines=args.progress == "lines",
        )
        return cls(**values)

    def to_argv(self) -> list[str]:
        """``controlcg`` arguments (after the program) that parse back to this request."""
        argv = ["counterfactual", str(self.input), "--target", self.target, "--out", str(self.out)]
        argv += ["--w", *[_number(w) for w in self.scales], "--source", self.source or "none"]
        for name, option in _VALUE_OPTIONS.items():
            value = getattr(self, name)
            if value is not None:
                argv += [option, _number(value) if isinstance(value, float) else str(value)]
        argv += [flag for name, flag in _FLAGS.items() if getattr(self, name)]
        if self.blend is not None:
            argv.append("--blend" if self.blend else "--no-blend")
        if not self.montage:
            argv.append("--no-montage")
        argv += ["--progress", "lines" if self.progress_lines else "bar"]
        return argv


def _number(value: float) -> str:
    """A float as the command line spells it: short ("4", "2.5") where that reads back exactly, else every digit."""
    short = w_key(value)
    return short if float(short) == value else repr(float(value))

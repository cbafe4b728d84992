"""The model function the sampler sees: guided v predictions for one step, and nothing about how they are made.

One call at timestep t (paper Eqs. 5 and 8):

1. with a reference y_t given, one *reference pass* of the UNet with the null class records the self-attention
   tokens h(y_t). It depends neither on the target class nor on w, so it is done once per step and shared by every
   w of the call;
2. for each trajectory (a class and a w), a conditional and (when w != 0) an unconditional pass on its x_t, both
   injecting h(y_t), are combined by classifier-free guidance into one v prediction. A paired counterfactual runs
   the target's and the source class's trajectories through one call, so they share the reference pass.

All passes run under the requested precision (bfloat16 autocast or exact); the predictions come back in fp32 for the
scheduler. The sampler (sampler.py) calls this for every step, and the memory estimate (memory.py) traces this very
call, so the two cannot drift apart. Injection stays a behaviour installed on the attention layers (injection.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from .guidance import cfg_combine
from .injection import AttentionInjector
from .settings import InjectionConfig, Precision

Trajectory = tuple[int, float]  # (class index, w)


class GuidedStep:
    """Guided v at one timestep for trajectories keyed by (class index, w); a context manager that installs (and
    removes) the attention injection and puts the model in eval mode while it is open."""

    def __init__(
        self, model, classes: Sequence[int], injection: InjectionConfig | None = None, precision: Precision = "fp32"
    ):
        self.model = model
        self.device = next(model.parameters()).device
        self.cond = {int(c): model.conditioning(int(c), 1, self.device) for c in classes}
        self.null = model.conditioning(model.null_class, 1, self.device)
        self.injector = AttentionInjector(model, injection.layers) if injection is not None else None
        self.precision = precision
        self._was_training: bool | None = None

    def __enter__(self) -> GuidedStep:
        self._was_training = self.model.training
        self.model.eval()
        if self.injector is not None:
            self.injector.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.injector is not None:
                self.injector.__exit__(*exc)
        finally:
            self.model.train(bool(self._was_training))

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def __call__(
        self, xs: dict[Trajectory, torch.Tensor], t: int, reference: torch.Tensor | None = None
    ) -> dict[Trajectory, torch.Tensor]:
        """v per trajectory for ``xs`` ((class, w) -> x_t) at timestep ``t``; ``reference`` (y_t) given and an
        injection configured: every pass of this step injects the reference's attention tokens."""
        tt = torch.full((1,), t, dtype=torch.long, device=self.device)
        unet = self.model.unet
        inject = reference is not None and self.injector is not None
        if inject:
            with self.injector.recording(), self._autocast():
                unet(reference, tt, **self.null)
        guided = {}
        for (label, w), x in xs.items():
            with self.injector.injecting() if inject else contextlib.nullcontext(), self._autocast():
                cond = unet(x, tt, **self.cond[label]).float()
                uncond = unet(x, tt, **self.null).float() if w != 0 else None
            guided[label, w] = cfg_combine(cond, uncond, w)
        return guided

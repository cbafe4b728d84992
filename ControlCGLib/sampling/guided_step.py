"""The model function the sampler sees: guided v predictions for one step, and nothing about how they are made.

One call at timestep t (paper Eqs. 5 and 8):

1. with a reference y_t given, one *reference pass* of the UNet with the null class records the self-attention
   tokens h(y_t). It depends neither on the target class nor on w, so it is done once per step and shared by every
   w of the call;
2. for each trajectory (a class and a w), a conditional and (when w != 0) an unconditional pass on its x_t, both
   injecting h(y_t), are combined by classifier-free guidance into one v prediction. A paired counterfactual runs
   the target's and the source class's trajectories through one call, so they share the reference pass.

A pass is made once per distinct input: trajectories whose x_t are equal (at the first step every trajectory starts
from the same point) share their unconditional pass, and those of one class their conditional pass too; the result
is bit for bit what separate passes give. With ``kv_stride`` > 1 the large self-attention layers attend to fewer
keys (token_downsampling.py).

All passes run under the requested precision (bfloat16 autocast or exact); the predictions come back in fp32 for the
scheduler. Under bfloat16 the weights are held channels-last while the step is open (oneDNN then keeps its blocked
layouts from one convolution to the next): measured on this project's 2-core CPU, a pass of the paper preset takes
2.8 s instead of 5.0 s, the embedded model's 0-10 % less; in fp32 it gained 3-5 % and is not used.
The sampler (sampler.py) calls this for every step, and the memory estimate (memory.py) traces this very
call, so the two cannot drift apart. Injection stays a behaviour installed on the attention layers (injection.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from .guidance import cfg_combine
from .injection import SelfAttentionControl
from .settings import InjectionConfig, Precision
from .solvers import Trajectory


@contextlib.contextmanager
def weight_layout(model, precision: Precision):
    """The weights channels-last while open under bfloat16 (module docstring), contiguous again after. Each 5D
    weight's data is replaced in place (``Module.to`` would swap the tensors, which the memory trace's fake tensors
    refuse)."""
    weights = [p for p in model.parameters() if p.ndim == 5] if precision == "bf16" else []
    _hold(weights, torch.channels_last_3d)
    try:
        yield model
    finally:
        _hold(weights, torch.contiguous_format)  # the caller's model as it was


def _hold(weights, memory_format) -> None:
    for p in weights:
        p.data = p.data.contiguous(memory_format=memory_format)


class GuidedStep:
    """Guided v at one timestep for trajectories keyed by (class index, w); a context manager that installs (and
    removes) the attention injection and puts the model in eval mode while it is open."""

    def __init__(
        self,
        model,
        classes: Sequence[int],
        injection: InjectionConfig | None = None,
        precision: Precision = "fp32",
        kv_stride: int = 1,
    ):
        self.model = model
        self.device = next(model.parameters()).device
        self.cond = {int(c): model.conditioning(int(c), 1, self.device) for c in classes}
        self.null = model.conditioning(model.null_class, 1, self.device)
        self.attention = None
        if injection is not None or kv_stride > 1:
            layers = injection.layers if injection is not None else ()
            self.attention = SelfAttentionControl(model, layers, kv_stride=kv_stride, grid=model.config.grid)
        self.inject = injection is not None
        self.passes = 0  # UNet passes made (the benchmarks count them)
        self.precision = precision
        self._was_training: bool | None = None
        self._layout = None

    def __enter__(self) -> GuidedStep:
        self._was_training = self.model.training
        self.model.eval()
        self._layout = weight_layout(self.model, self.precision)
        self._layout.__enter__()
        if self.attention is not None:
            self.attention.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.attention is not None:
                self.attention.__exit__(*exc)
        finally:
            self._layout.__exit__(*exc)
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
        inject = reference is not None and self.inject
        if inject:
            with self.attention.recording(), self._autocast():
                unet(reference, tt, **self.null)
            self.passes += 1
        distinct: list[torch.Tensor] = []  # one representative per distinct x_t
        made: dict[tuple[int, int | None], torch.Tensor] = {}  # (input, class or None for unconditional) -> v

        def v(x: torch.Tensor, label: int | None) -> torch.Tensor:
            index = next((i for i, d in enumerate(distinct) if d is x or torch.equal(d, x)), None)
            if index is None:
                distinct.append(x)
                index = len(distinct) - 1
            if (index, label) not in made:
                with self.attention.injecting() if inject else contextlib.nullcontext(), self._autocast():
                    made[index, label] = unet(x, tt, **(self.null if label is None else self.cond[label])).float()
                self.passes += 1
            return made[index, label]

        return {(label, w): cfg_combine(v(x, label), v(x, None) if w != 0 else None, w) for (label, w), x in xs.items()}

"""Progress and cancellation shared by every long loop: a typed step record, a Cancelled exception, a tqdm adaptor.

The loop reports through ``on_step(StepInfo)`` and asks ``should_stop()`` at the top of each step; the command line
(tqdm), the Slicer panel (status bar) and the evaluation (logs) are adaptors over the same two callables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


class Cancelled(Exception):
    """Raised when ``should_stop()`` said yes; the interrupted call returns nothing."""


@dataclass
class StepInfo:
    index: int  # steps done so far, 1-based
    total: int
    timestep: int
    elapsed: float  # seconds since the loop started
    x0: dict[float, torch.Tensor] = field(default_factory=dict, repr=False)  # current clean estimate per w


StepCallback = Callable[[StepInfo], None]
StopCallback = Callable[[], bool]


class TqdmProgress:
    """``on_step`` callback drawing a tqdm bar; close it (or use ``with``) when the loop ends."""

    def __init__(self, desc: str = "sampling", disable: bool = False):
        self.desc = desc
        self.disable = disable
        self._bar = None

    def __call__(self, info: StepInfo) -> None:
        if self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=info.total, desc=self.desc, disable=self.disable, unit="step", mininterval=1.0)
        self._bar.update(info.index - self._bar.n)
        self._bar.set_postfix(t=info.timestep)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

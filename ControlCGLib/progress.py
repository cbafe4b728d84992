"""Progress and cancellation shared by every long loop: a typed step record, a Cancelled exception, a tqdm adaptor.

The loop reports through ``on_step(StepInfo)`` and asks ``should_stop()`` at the top of each step; the command line
(tqdm), the Slicer panel (status bar) and the evaluation (logs) are adaptors over the same two callables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .defaults import PROGRESS_PREFIX, STAGES

if TYPE_CHECKING:  # torch only for annotations: the Slicer panel reads progress lines before torch is installed
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


# A line protocol for a parent process that reads our output (the Slicer panel): one flushed line per event, so
# that progress arrives while the work runs, whatever the pipe's buffering. Both ends live here; the prefix and the
# stages are protocol constants in defaults.py.


@dataclass(frozen=True)
class ProgressLine:
    stage: str  # "preparing", "sampling", "mapping back", "verdicts", "writing", "done"
    index: int = 0  # sampling steps done (0 outside sampling)
    total: int = 0

    @property
    def fraction(self) -> float:
        """Overall completion in [0, 1]: sampling is the long part, the stages around it share the rest."""
        base = STAGES.get(self.stage, 0.0)
        if self.stage == "sampling" and self.total:
            return round(base + (STAGES["mapping back"] - base) * self.index / self.total, 6)
        return base


def format_progress(stage: str, index: int = 0, total: int = 0) -> str:
    return f"{PROGRESS_PREFIX} stage={stage.replace(' ', '_')} step={index}/{total}"


def parse_progress(line: str) -> ProgressLine | None:
    """The event a line of our output announces, or None for any other line (logs, warnings, tqdm)."""
    parts = line.strip().split()
    if len(parts) != 3 or parts[0] != PROGRESS_PREFIX:
        return None
    try:
        stage = parts[1].removeprefix("stage=").replace("_", " ")
        index, total = (int(v) for v in parts[2].removeprefix("step=").split("/"))
    except ValueError:
        return None
    return ProgressLine(stage, index, total)


class LineProgress:
    """``on_step`` / ``on_stage`` callbacks printing protocol lines (flushed) instead of a bar."""

    def __init__(self, stream=None):
        import sys

        self.stream = stream or sys.stdout

    def stage(self, name: str, index: int = 0, total: int = 0) -> None:
        print(format_progress(name, index, total), file=self.stream, flush=True)

    def __call__(self, info: StepInfo) -> None:
        self.stage("sampling", info.index, info.total)

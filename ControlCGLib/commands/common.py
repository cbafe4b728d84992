"""What several subcommands share: the parser helper, the output-folder checks, the device and precision choices."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from ..defaults import DEVICE, DEVICES, PRECISION, PRECISIONS
from ..sampling.settings import CLI_SOLVERS, SPACINGS


class _DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each default, except an unset one (None), whose help says who decides."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def add_command(sub, name: str, help: str, func) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, formatter_class=_DefaultsFormatter)
    p.set_defaults(func=func)
    return p


def add_threads(p: argparse.ArgumentParser, help: str = "torch CPU threads") -> None:
    p.add_argument("--threads", type=int, default=2, help=help)


def add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")


def add_device_and_precision(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", choices=DEVICES, default=DEVICE, help="where the model runs")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=PRECISION,
        help="UNet arithmetic; auto = bfloat16 where the hardware has it natively",
    )


def add_solver_and_spacing(p: argparse.ArgumentParser, whose: str = "the product's") -> None:
    """The sampling loop's step, its grid and its attention's key stride; unset (None): ``whose`` defaults decide
    (sampling/settings.product_sampling)."""
    from .. import defaults

    p.add_argument(
        "--solver", choices=CLI_SOLVERS, default=None, help=f"the step: DDIM or DPM-Solver++(2M) (default: {whose}, "
        f"{defaults.SOLVER})",
    )  # fmt: skip
    p.add_argument(
        "--spacing", choices=SPACINGS, default=None, help=f"the grid: even in timesteps or in log SNR (default: "
        f"{whose}, {defaults.SPACING})",
    )  # fmt: skip
    p.add_argument(
        "--kv-stride",
        type=int,
        default=None,
        help="keys and values of the large self-attention layers averaged over stride^3 token blocks; 1 = exact "
        f"(default: {whose}, {defaults.KV_STRIDE.default:g})",
    )


def set_threads(threads: int) -> None:
    import torch

    if threads < 1:
        raise ValueError(f"--threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def output_folder(path: str | Path, overwrite: bool, create: bool = True) -> Path:
    """The output folder (created unless ``create`` is False); an existing non-empty one only with ``--overwrite``,
    so nothing of the user's is replaced by accident."""
    out = Path(path)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ValueError(f"{out} exists and is not empty; pass --overwrite or choose another --out")
    check_writable(out)
    if create:
        out.mkdir(parents=True, exist_ok=True)
    return out


def check_writable(out: Path) -> None:
    """Refuse, before any compute, an output folder that cannot be written: try a file in its nearest existing
    folder (a permission check alone would pass for root on a read-only file system)."""
    parent = out if out.exists() else next(p for p in out.absolute().parents if p.exists())
    if not parent.is_dir():
        raise ValueError(f"cannot write {out}: {parent} is a file, not a folder; choose another --out")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as exc:
        raise ValueError(f"cannot write into {parent} ({exc.strerror or exc}); choose another --out") from None


def choose_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: this torch sees no CUDA GPU (use --device cpu or auto)")
    return name


def choose_precision(name: str, device: str) -> str:
    """``auto``: bfloat16 autocast where the hardware computes it natively (measured 2.4x faster per UNet pass on
    this project's avx512_bf16 CPU, same evaluation metrics; benchmarks/speed.py), else fp32."""
    import torch

    if name != "auto":
        return name
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    try:
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    except (AttributeError, RuntimeError):  # a torch without the probe: stay exact
        return "fp32"

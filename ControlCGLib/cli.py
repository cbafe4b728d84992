"""The ``controlcg`` command line: builds the parser from each command module's ``register`` and maps errors to
the exit codes of ControlCGLib/defaults.py. Heavy imports (torch, MONAI) happen inside each command, so ``--help``
is fast.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .commands import counterfactual, data, evaluate, prepare, toy, train
from .defaults import EXIT_FAILED, EXIT_OK, EXIT_REFUSED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="controlcg",
        description="Controllable counterfactuals of brain MRI with a class-conditional diffusion model (MICCAI 2024).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"controlcg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in (data, counterfactual, toy, prepare, evaluate, train):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_OK
    try:
        return args.func(args)
    except (ValueError, OSError) as exc:  # clear message, no traceback, for the errors users can fix
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    except Exception as exc:  # from deep inside torch, ITK or MONAI: one line, the traceback on request
        if os.environ.get("CONTROLCG_DEBUG"):
            raise
        from .imaging.reading import error_line

        print(
            f"error: the computation failed ({type(exc).__name__}: {error_line(exc)}). "
            "Set CONTROLCG_DEBUG=1 for the full traceback and report it if it persists",
            file=sys.stderr,
        )
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())

"""File checksums recorded with every result (model and classifier weights) and checked for the sample data.

Separate from checkpoints.py so that code without torch (the Slicer panel) can use it."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()

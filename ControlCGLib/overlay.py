"""The overlays' colours: one definition for Slicer's colour tables and for the library's pictures. The volume change
has a palette of its own (PuOr, :data:`PUOR`) drawn the same way; the rest of this says what the saliency's is.

Blue = darker in the counterfactual, red = brighter (ColorBrewer's RdBu, reversed). Entries whose value lies within
``transparent_fraction`` of the window's half-width around zero get alpha 0, so that near-zero change leaves the
anatomy visible instead of bleaching it with the table's white centre (Slice views treat alpha as on/off). The window
is symmetric around zero and shared by every w of a sweep, so the same colour means the same change across w.
numpy only: the Slicer module imports this in Slicer's own Python, before torch is installed.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

# ColorBrewer RdBu (11 classes), from the most negative to the most positive value.
RDBU = (
    np.array(
        [
            (5, 48, 97),
            (33, 102, 172),
            (67, 147, 195),
            (146, 197, 222),
            (209, 229, 240),
            (247, 247, 247),
            (253, 219, 199),
            (244, 165, 130),
            (214, 96, 77),
            (178, 24, 43),
            (103, 0, 31),
        ],
        dtype=float,
    )
    / 255.0
)


# ColorBrewer PuOr (11 classes) from the most negative value (shrinks, purple) to the most positive (grows, orange):
# a palette of its own, so that the volume change is never read as the saliency's brighter / darker.
PUOR = (
    np.array(
        [
            (45, 0, 75),
            (84, 39, 136),
            (128, 115, 172),
            (178, 171, 210),
            (216, 218, 235),
            (247, 247, 247),
            (254, 224, 182),
            (253, 184, 99),
            (224, 130, 20),
            (179, 88, 6),
            (127, 59, 8),
        ],
        dtype=float,
    )
    / 255.0
)


def diverging_rgba(n: int = 256, transparent_fraction: float = 0.05, anchors: np.ndarray = RDBU) -> np.ndarray:
    """``(n, 4)`` RGBA rows in [0, 1] for values from -window to +window, interpolated between ``anchors`` (RGB in
    [0, 1], most negative first; the saliency's RdBu by default); the centre band is transparent."""
    if n < 3:
        raise ValueError(f"a diverging table needs at least 3 colours, got {n}")
    if not 0.0 <= transparent_fraction < 1.0:
        raise ValueError(f"transparent_fraction must be in [0, 1), got {transparent_fraction}")
    x = np.linspace(-1.0, 1.0, n)  # the value each entry stands for, as a fraction of the half-width
    pos = (x + 1.0) / 2.0 * (len(anchors) - 1)
    rgb = np.stack([np.interp(pos, np.arange(len(anchors)), anchors[:, c]) for c in range(3)], axis=1)
    alpha = (np.abs(x) > transparent_fraction).astype(float)
    return np.concatenate([rgb, alpha[:, None]], axis=1)


def symmetric_window(saliencies: Iterable[np.ndarray]) -> float:
    """Half-width of the shared window: the largest |change| over all maps (never 0, so a table always spans)."""
    peak = 0.0
    for s in saliencies:
        a = np.asarray(s, dtype=float)
        finite = a[np.isfinite(a)]
        if finite.size:
            peak = max(peak, float(np.abs(finite).max()))
    return peak if peak > 0 else 1e-6

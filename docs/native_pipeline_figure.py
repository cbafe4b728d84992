"""Regenerates docs/images/native_detail_vs_resampled.png: a synthetic model-grid change (a darkened central blob, like
an enlarged ventricle) brought back onto an oblique, anisotropic copy of the template, both ways the pipeline offers.

    python docs/native_pipeline_figure.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing" / "Python"))
from test_geometry_native import GRID, oblique_scan  # noqa: E402  (the test's own scan, so figure and test agree)

from ControlCGLib.figures import montage  # noqa: E402
from ControlCGLib.imaging.native_space import prepare  # noqa: E402


def main() -> None:
    scan, _ = oblique_scan.__wrapped__()
    prepared = prepare(scan, GRID)
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in prepared.model_input.shape], indexing="ij")
    c = np.array(prepared.model_input.shape) / 2
    blob = np.exp(-(((zz - c[0]) / 3) ** 2 + ((yy - c[1]) / 5) ** 2 + ((xx - c[2]) / 4) ** 2))
    result = prepared.to_native(np.clip(prepared.model_input - 0.4 * blob * prepared.mask, 0, 1))

    def unit(image):
        return (sitk.GetArrayFromImage(image) - prepared.low) / (prepared.high - prepared.low)

    native = unit(scan)
    out = Path(__file__).resolve().parent / "images" / "native_detail_vs_resampled.png"
    montage(
        out,
        {
            "native scan": native,
            "detail: scan + change": unit(result.detail),
            "resampled model grid": unit(result.resampled),
        },
        {
            "detail: scan + change": unit(result.detail) - native,
            "resampled model grid": (unit(result.resampled) - native) * sitk.GetArrayFromImage(result.mask),
        },
        title="back on an oblique 1.3 x 1.1 x 2.5 mm grid: keep the scan's detail, add only the change",
        spacing=scan.GetSpacing()[::-1],
    )
    print(out)


if __name__ == "__main__":
    main()

"""docs/images/simulated_cohort.png: one cohort v3 subject per base anatomy -- scan, true counterfactual, true change,
true volume change (log-Jacobian).

python docs/simulated_cohort_figure.py
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ControlCGLib.data.anatomies import anatomy_names  # noqa: E402
from ControlCGLib.data.simulator import CohortSimulator  # noqa: E402

OUT = Path(__file__).resolve().parent / "images" / "simulated_cohort.png"


def main() -> None:
    sim = CohortSimulator()
    names = anatomy_names()
    fig, axes = plt.subplots(len(names), 4, figsize=(11, 2.5 * len(names)))
    for row, (i, name) in zip(axes, enumerate(names)):
        label = "CN" if i % 2 else "AD"
        record, image, cf, change, log_jacobian, _ = sim.subject_with_volume_change(i, 7, label, name)
        z = image.shape[0] // 2 + 2
        c = image.shape[1] // 2 - 8
        window = max(1e-6, float(np.abs(change).max()))
        volume = max(1e-6, float(np.abs(log_jacobian).max()))
        ad_side = f"\n{record.subtype}, asymmetry {record.asymmetry:+.2f}"  # the AD side's disease
        scan_title = f"{name}: {record.label}{ad_side if record.label == 'AD' else ''}, age {record.age:g}"
        cf_title = f"true {record.counterfactual_label}{ad_side if record.label == 'CN' else ''}"
        shown = [
            (image[z][::-1], "gray", (0, 1.2), scan_title),
            (cf[z][::-1], "gray", (0, 1.2), cf_title),
            (change[z][::-1], "RdBu_r", (-window, window), "true change (axial)"),
            (log_jacobian[:, c][::-1], "PuOr_r", (-volume, volume), "true volume change (coronal)"),
        ]
        for ax, (im, cmap, (lo, hi), title) in zip(row, shown):
            ax.imshow(im, cmap=cmap, vmin=lo, vmax=hi)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.suptitle(
        "cohort v3: one subject per base anatomy (seed 7); red = brighter in the counterfactual, "
        "orange = more volume there in the counterfactual (log-Jacobian)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(OUT, dpi=80)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

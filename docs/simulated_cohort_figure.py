"""docs/images/simulated_cohort.png: one cohort v2 subject per base anatomy -- scan, true counterfactual, true change.

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
    fig, axes = plt.subplots(len(names), 4, figsize=(10, 2.4 * len(names)))
    for row, (i, name) in zip(axes, enumerate(names)):
        record, image, cf, change = sim.subject(i, seed=7, label="CN" if i % 2 else "AD", anatomy=name)
        z = image.shape[0] // 2 + 2
        c = image.shape[1] // 2 - 8
        window = max(1e-6, float(np.abs(change).max()))
        shown = [
            (image[z][::-1], "gray", (0, 1.2), f"{name}: {record.label}, age {record.age:g}"),
            (cf[z][::-1], "gray", (0, 1.2), f"true counterfactual ({record.counterfactual_label})"),
            (change[z][::-1], "RdBu_r", (-window, window), "true change (axial)"),
            (change[:, c][::-1], "RdBu_r", (-window, window), "true change (coronal)"),
        ]
        for ax, (im, cmap, (lo, hi), title) in zip(row, shown):
            ax.imshow(im, cmap=cmap, vmin=lo, vmax=hi)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.suptitle("cohort v2: one subject per base anatomy (seed 7); red = brighter in the counterfactual", fontsize=9)
    fig.tight_layout()
    fig.savefig(OUT, dpi=80)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()

"""Measures on real T1s, which have no true counterfactual: how much a counterfactual toward the scan's own class
changes it (composition: ideally nothing), where the change toward the other class goes, region by region and with
its sign, how much of it a second seed repeats, and how much of the shown image is darker than any tissue of the scan
(an intensity the scan never had: physically impossible for that patient).

Each scan goes the product's whole path (pipeline.py: registration, the one sampling loop, verdicts). The regions are
the ICBM template's (data/anatomies.py), which the registration brings onto the scan's model grid; a region's
*concentration* is its share of the change mass divided by its share of the brain's volume: 1 means "changed like
everywhere else", above 1 "changed more than its size says". For the bundled Colin27 head, the hippocampi are also read
from a source independent of the registration's labels: the AAL atlas drawn on that head itself (``hippocampi (AAL)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..data.anatomies import REGIONS, head_hippocampi, head_scan, load_anatomy
from ..imaging.geometry import resample
from ..imaging.reading import read_scan
from ..sampling.settings import SamplingConfig
from .metrics import mse, ssim

#: The report's regions: name -> labels of data/anatomies.REGIONS.
REPORTED = {
    "ventricles": (REGIONS["ventricles"],),
    "hippocampi": (REGIONS["hippocampi"],),
    "temporal lobes": (REGIONS["temporal cortex"],),
    "rest of the cortex": (REGIONS["parietal cortex"], REGIONS["other cortex"]),
    "white matter": (REGIONS["white matter"],),
}


#: The AAL hippocampi as a one-region label map (own_hippocampi's mask, 1 inside).
AAL = {"hippocampi (AAL)": (1,)}


def region_concentration(
    change: np.ndarray, labels: np.ndarray, brain: np.ndarray, regions: dict = REPORTED
) -> dict[str, float | None]:
    """Share of |change| mass ÷ share of volume, per region (default :data:`REPORTED`), inside ``brain``."""
    mass = np.abs(change) * brain
    total = float(mass.sum())
    out: dict[str, float | None] = {}
    for name, ids in regions.items():
        region = np.isin(labels, ids) & brain
        volume_share = region.sum() / max(1, brain.sum())
        out[name] = round(float(mass[region].sum()) / total / volume_share, 3) if total > 0 and volume_share else None
    return out


#: The input's brain intensities below this percentile count as "darker than any tissue of this scan".
DARK_PERCENTILE = 0.5


def region_mean_change(
    change: np.ndarray, labels: np.ndarray, brain: np.ndarray, regions: dict = REPORTED
) -> dict[str, float | None]:
    """The signed mean change per region (default :data:`REPORTED`; negative: the counterfactual is darker there)."""
    out: dict[str, float | None] = {}
    for name, ids in regions.items():
        region = np.isin(labels, ids) & brain
        out[name] = round(float(change[region].mean()), 5) if region.any() else None
    return out


def own_hippocampi(path: str | Path, prepared) -> np.ndarray | None:
    """The scan's own hand-drawn hippocampi on its model grid, where the project ships them (the Colin27 head's AAL
    labels, on the head's grid: carried by the scan's registration), else None."""
    if Path(path).resolve() != head_scan().resolve() or not head_hippocampi().exists():
        return None
    labels = sitk.ReadImage(str(head_hippocampi()))
    on_grid = resample(labels, prepared.grid, prepared.transform, interpolator=sitk.sitkNearestNeighbor)
    return sitk.GetArrayFromImage(on_grid) > 0.5


def darker_than_the_scan(shown: np.ndarray, unit: np.ndarray, brain: np.ndarray) -> float:
    """Share of brain voxels of ``shown`` darker than the scan's own DARK_PERCENTILE (the scan itself: 0.005)."""
    floor = np.percentile(unit[brain], DARK_PERCENTILE)
    return float(np.mean(shown[brain] < floor))


def seed_correlation(a: np.ndarray, b: np.ndarray, brain: np.ndarray) -> float | None:
    """Pearson r of two change maps in the brain: how much of the change is the method's, not the seed's."""
    x, y = a[brain], b[brain]
    return float(np.corrcoef(x, y)[0, 1]) if x.std() > 0 and y.std() > 0 else None


def measure_real(
    model,
    classifier,
    paths: Sequence[str | Path],
    w: float,
    sampling: SamplingConfig,
    seed: int = 0,
    on_scan=None,
) -> list[dict]:
    """One record per scan: the classifier's verdict, composition toward its own class, and per class the change's
    concentration and signed mean over the regions, its share of impossibly dark voxels, and (toward the other class)
    its correlation with a second seed's change."""
    from ..imaging.deformation import log_volume_change
    from ..pipeline import run_counterfactual

    atlas = load_anatomy("icbm2009a").labels
    names = list(model.config.class_names)
    records = []
    for path in paths:
        image = read_scan(str(path))
        runs = {
            target: run_counterfactual(
                model,
                image,
                target,
                (w,),
                sampling,
                seed=seed,
                classifier=classifier,
                accept_unusual=True,
                source="auto",  # the product's default: paired with the classifier's verdict
            )
            for target in names
        }
        first = next(iter(runs.values()))
        verdict = first.input_verdict
        own = max(verdict, key=verdict.get) if verdict else names[0]
        grid = first.prepared.grid
        labels = sitk.GetArrayFromImage(resample(atlas, grid, interpolator=sitk.sitkNearestNeighbor)).astype(int)
        unit, brain = first.prepared.model_input, first.prepared.mask > 0.5
        aal = own_hippocampi(path, first.prepared)
        aal = aal.astype(int) if aal is not None and (aal & brain).any() else None
        record = {
            "scan": str(path),
            "verdict": verdict,
            "own_class": own,
            "composition_mse": mse(unit, runs[own].model_grid[w]),
            "composition_ssim": ssim(unit, runs[own].model_grid[w]),
            "raw_composition_mse": mse(unit, runs[own].raw[w]),  # the unpaired model output's (the paper's)
            "change_toward": {},
            "warnings": first.settings.get("scan_warnings", []),
        }
        for target, run in runs.items():
            change = run.model_grid[w] - unit
            record["change_toward"][target] = {
                "mean_abs_change": float(np.abs(change)[brain].mean()),
                "raw_mean_abs_change": float(np.abs(run.raw[w] - unit)[brain].mean()),
                "verdict": run.verdicts.get(w, {}),
                "concentration": region_concentration(change, labels, brain),
                "mean_change": region_mean_change(change, labels, brain),
                "darker_than_scan": darker_than_the_scan(run.model_grid[w], unit, brain),
                "seed_correlation": None,
                # a deformation run: the regional volume change (%) and where the volume changes (|log ratio|)
                "volume_change_percent": {k: v.change_percent for k, v in run.volumes.get(w, {}).items()},
                "volume_concentration": None,
            }
            if w in run.warps:
                grown = np.abs(log_volume_change(run.warps[w]))
                shares = region_concentration(grown, labels, brain)
                if aal is not None:
                    shares.update(region_concentration(grown, aal, brain, AAL))
                record["change_toward"][target]["volume_concentration"] = shares
            if aal is not None:
                entry = record["change_toward"][target]
                entry["concentration"].update(region_concentration(change, aal, brain, AAL))
                entry["mean_change"].update(region_mean_change(change, aal, brain, AAL))
            if target != own:  # a second seed: is the change the method's or the noise's?
                again = run_counterfactual(
                    model, image, target, (w,), sampling, seed=seed + 1, classifier=classifier, accept_unusual=True,
                    source="auto",
                )  # fmt: skip
                repeat = seed_correlation(change, again.model_grid[w] - unit, brain)
                record["change_toward"][target]["seed_correlation"] = repeat
        records.append(record)
        if on_scan:
            on_scan(record)
    return records


def markdown(records: Sequence[dict], w: float) -> str:
    regions = list(REPORTED) + list(AAL)
    lines = [
        f"# Real scans (no ground truth), w = {w:g}",
        "",
        "Composition: the counterfactual toward the scan's own class should be the scan (MSE 0, SSIM 1). "
        "Concentration: a region's share of the change mass ÷ its share of the brain's volume (1 = like everywhere); "
        "in brackets the region's signed mean change (negative: darker). Seed r: correlation of the change with a "
        "second seed's. Darker than the scan: share of brain voxels of the shown counterfactual below the scan's own "
        f"{DARK_PERCENTILE:g}th percentile (the scan itself: {DARK_PERCENTILE / 100:g}).",
        "",
        "| scan | verdict | own class | composition MSE | composition SSIM | change toward | mean abs change | "
        "seed r | darker than the scan | " + " | ".join(regions) + " |",
        "|" + "---|" * (9 + len(regions)),
    ]
    for r in records:
        verdict = ", ".join(f"{k} {v:.2f}" for k, v in r["verdict"].items())
        for target, c in r["change_toward"].items():
            cells = [_region_cell(c, k) for k in regions]
            repeat = "–" if c.get("seed_correlation") is None else f"{c['seed_correlation']:.2f}"
            dark = "–" if c.get("darker_than_scan") is None else f"{c['darker_than_scan']:.4f}"
            lines.append(
                f"| {Path(r['scan']).name} | {verdict} | {r['own_class']} | {r['composition_mse']:.4f} | "
                f"{r['composition_ssim']:.3f} | {target} | {c['mean_abs_change']:.4f} | {repeat} | {dark} | "
                + " | ".join(cells)
                + " |"
            )
    volumes = [(r, t, c) for r in records for t, c in r["change_toward"].items() if c.get("volume_change_percent")]
    if volumes:
        names = list(volumes[0][2]["volume_change_percent"])
        lines += [
            "",
            "Regional volume change of the deformation (%, atlas regions under the scan's registration), and where the "
            "volume changes: a region's share of |log volume ratio| ÷ its share of the brain's volume.",
            "",
            "| scan | change toward | "
            + " | ".join(names)
            + " | "
            + " | ".join(f"{k} (|log ratio|)" for k in [*REPORTED, *AAL])
            + " |",
            "|" + "---|" * (2 + len(names) + len(REPORTED) + len(AAL)),
        ]
        for r, target, c in volumes:
            shares = c.get("volume_concentration") or {}
            lines.append(
                f"| {Path(r['scan']).name} | {target} | "
                + " | ".join(f"{c['volume_change_percent'][k]:+.1f}" for k in names)
                + " | "
                + " | ".join("–" if shares.get(k) is None else f"{shares[k]:.2f}" for k in [*REPORTED, *AAL])
                + " |"
            )
    return "\n".join(lines) + "\n"


def _region_cell(change: dict, region: str) -> str:
    share, mean = change["concentration"].get(region), (change.get("mean_change") or {}).get(region)
    if share is None:
        return "–"
    return f"{share:.2f}" + (f" ({mean:+.3f})" if mean is not None else "")

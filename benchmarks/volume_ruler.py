"""How well the evaluation's volume ruler (ControlCGLib/evaluation/volumes.py) reads the simulator's true volumes.

    python benchmarks/volume_ruler.py COHORT/manifest.csv --out benchmarks/results/volume_ruler.json

For every subject of a simulated cohort (give one of the training anatomies: the ruler is chosen there), read the
hippocampal and ventricular volume change from the scan to its true counterfactual with the ruler, on the embedded
model's grid, and compare it with the change the simulator knows (manifest.csv: its warped region masks at 2 mm).
Prints and writes the slope and Pearson r per region: a slope of 1 reads the change at its size, a slope below 1
compresses it (a structure thinner than the grid's voxels).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from tqdm.auto import tqdm

from ControlCGLib.evaluation.measures import subject_ruler
from ControlCGLib.evaluation.subjects import prepare_subject, read_simulated
from ControlCGLib.model.checkpoints import read_checkpoint_config
from ControlCGLib.resources import diffusion_dir

COLUMNS = {"hippocampi": "hippocampus_ml", "ventricles": "ventricle_ml"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("manifest")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    config, _ = read_checkpoint_config(diffusion_dir())
    rows = {r["subject"]: r for r in csv.DictReader(open(args.manifest))}
    pairs: dict[str, list[tuple[float, float]]] = {k: [] for k in COLUMNS}
    for s in tqdm(read_simulated(args.manifest), desc="subjects", unit="subject"):
        prepared = prepare_subject(s, config.grid, config.intensity)
        unit = prepared.model_input
        ruler = subject_ruler(s, prepared, unit, prepared.mask)
        if ruler is None:
            raise SystemExit(f"{args.manifest} has no region labels (a cohort v1 manifest?)")
        truth = prepared.same_scaling(sitk.ReadImage(str(s.true_counterfactual)))
        read = ruler.change_percent(truth, ruler.volumes(unit))
        for region, column in COLUMNS.items():
            r = rows[s.subject]
            known = 100.0 * (float(r[f"counterfactual_{column}"]) / float(r[column]) - 1.0)
            pairs[region].append((known, read[region]))
    result = {"manifest": args.manifest, "subjects": len(rows), "grid": list(config.grid)}
    for region, values in pairs.items():
        known, read = np.array(values).T
        result[region] = {
            "slope": round(float(np.polyfit(known, read, 1)[0]), 3),
            "r": round(float(np.corrcoef(known, read)[0, 1]), 3),
            "mean_known_change_percent": round(float(np.mean(known)), 1),
            "mean_read_change_percent": round(float(np.mean(read)), 1),
        }
        print(f"{region}: slope {result[region]['slope']}, r {result[region]['r']}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()

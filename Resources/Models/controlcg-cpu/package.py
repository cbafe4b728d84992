"""Copy a finished diffusion run and classifier run into this folder and draw the diffusion loss curve.

    python Resources/Models/controlcg-cpu/package.py RUN_DIFFUSION RUN_CLASSIFIER [RUN_JUDGE]

Only the model folders (weights.safetensors + config.json) and the logs are copied; training states stay behind.
``keep`` in place of a run leaves that model as it is (e.g. ``package.py keep runs/clf runs/judge`` retrains the
classifiers only).
"""

import shutil
import sys
from pathlib import Path

from ControlCGLib.figures import loss_curve
from ControlCGLib.model.checkpoints import load_checkpoint

here = Path(__file__).resolve().parent
runs = dict(zip(("diffusion", "classifier", "judge"), (Path(a) for a in sys.argv[1:4])))
for name, run in runs.items():
    if str(run) == "keep":
        continue
    target = here / name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(run / "model", target)
    shutil.copy(run / "metrics.csv", here / f"{name}_metrics.csv")
    load_checkpoint(target)  # refuse to package anything that does not load
if str(runs["diffusion"]) != "keep":
    loss_curve(here / "loss_curve.png", here / "diffusion_metrics.csv", title="embedded diffusion model (cpu preset)")
print(f"packaged into {here}")

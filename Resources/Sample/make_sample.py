"""Make Resources/Sample/sample_T1.nii.gz: one simulated CN subject (simulator seed 7, never seen in training, which
uses seed 0), moved off MNI space by a rigid transform (6 deg about the left-right axis, 4 deg about the vertical one,
shifted by (5, -8, 6) mm) onto a 2 mm grid, so that `controlcg demo` exercises registration and resampling back.

Run from the repository root: python Resources/Sample/make_sample.py
"""

import json
from pathlib import Path

import SimpleITK as sitk

from ControlCGLib.data.phantoms import off_mni
from ControlCGLib.data.simulator import COHORT_V1, CohortSimulator

here = Path(__file__).resolve().parent
sim = CohortSimulator(COHORT_V1)
record, image, _, _ = sim.subject(0, seed=7, label="CN")
mni = sitk.GetImageFromArray(image)
mni.CopyInformation(sim.anatomy.reference)

scan = off_mni(mni)  # the subject lies rotated and shifted in its scanner space
scan = sitk.Cast(sitk.RescaleIntensity(scan, 0, 1000), sitk.sitkInt16)  # scanner-like integer intensities
sitk.WriteImage(scan, str(here / "sample_T1.nii.gz"), useCompression=True)
(here / "sample_T1.json").write_text(json.dumps({k: v for k, v in vars(record).items() if v != ""}, indent=2) + "\n")
print(record)

"""Make Resources/Sample/sample_T1.nii.gz: one simulated CN subject (simulator seed 7, never seen in training, which
uses seed 0), moved off MNI space by a rigid transform (6 deg about the left-right axis, 4 deg about the vertical one,
shifted by (5, -8, 6) mm) onto a 2 mm grid, so that `controlcg demo` exercises registration and resampling back.

Run from the repository root: python Resources/Sample/make_sample.py
"""

import json
import math
from pathlib import Path

import SimpleITK as sitk

from ControlCGLib.geometry import resample
from ControlCGLib.simulator import CohortSimulator

here = Path(__file__).resolve().parent
sim = CohortSimulator()
record, image, _, _ = sim.subject(0, seed=7, label="CN")
mni = sitk.GetImageFromArray(image)
mni.CopyInformation(sim.anatomy.reference)

rigid = sitk.Euler3DTransform()
rigid.SetCenter([0.0, -18.0, 18.0])
rigid.SetRotation(math.radians(6), 0.0, math.radians(4))
rigid.SetTranslation((5.0, -8.0, 6.0))
scan = resample(mni, mni, rigid)  # the subject lies rotated and shifted in its scanner space
scan = sitk.Cast(sitk.RescaleIntensity(scan, 0, 1000), sitk.sitkInt16)  # scanner-like integer intensities
sitk.WriteImage(scan, str(here / "sample_T1.nii.gz"), useCompression=True)
(here / "sample_T1.json").write_text(json.dumps({k: v for k, v in vars(record).items() if v != ""}, indent=2) + "\n")
print(record)

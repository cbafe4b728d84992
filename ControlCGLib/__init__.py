"""ControlCG: controllable counterfactuals of brain MRI with a class-conditional diffusion model, as a plain Python
library (torch + MONAI) importable without 3D Slicer; docs/library.md ("What is in the library") maps its modules.
"""

__version__ = "0.1.0"

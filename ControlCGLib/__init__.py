"""ControlCG: controllable counterfactuals of brain MRI with a class-conditional diffusion model.

Plain Python (torch + MONAI), importable without 3D Slicer. The public API:

- :mod:`.config` — ``ModelConfig`` and its presets (``paper``, ``cpu``), ``SamplingConfig``, ``InjectionConfig``
- :mod:`.networks` — ``ClassConditionalUNet`` (MONAI DiffusionModelUNet + class table with a null row),
  ``build_classifier`` (MONAI 3D DenseNet)
- :mod:`.noise` — Gaussian and 3D pyramid noise
- :mod:`.diffusion` — ``Schedule``: timesteps, q_sample, DDIM / strided DDPM / DDIM-inversion steps
- :mod:`.guidance` — ``cfg_combine`` (Eq. 5)
- :mod:`.injection` — ``AttentionInjector`` (Eq. 8)
- :mod:`.sampler` — ``counterfactual()``, the one sampling loop
- :mod:`.training` — ``diffusion_loss``, the one training step
- :mod:`.saliency`, :mod:`.intensity`, :mod:`.checkpoints`, :mod:`.progress`
"""

__version__ = "0.1.0"

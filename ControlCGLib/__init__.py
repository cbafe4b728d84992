"""ControlCG: controllable counterfactuals of brain MRI with a class-conditional diffusion model.

Plain Python (torch + MONAI), importable without 3D Slicer. Where things live:

- :mod:`.model` — ``config`` (``ModelConfig``, presets ``paper`` and ``cpu``, ``ClassifierConfig``, JSON round trip),
  ``networks`` (``ClassConditionalUNet``, ``build_classifier``), ``checkpoints``, ``classifier`` (the verdict)
- :mod:`.sampling` — ``settings`` (``SamplingConfig``, ``InjectionConfig``), ``noise``, ``schedule`` (DDIM / strided
  DDPM / inversion steps), ``guidance`` (Eq. 5), ``injection`` (Eq. 8), ``sampler`` (``counterfactual()``, the one
  sampling loop), ``baselines`` (ILVR, DDIM inversion), ``memory``
- :mod:`.imaging` — reading, geometry, registration, intensity, ``native_space`` (to the model grid and back),
  scan checks, saliency
- :mod:`.data` — template, simulator, cohort, phantoms, toy
- :mod:`.training` — ``loss``, ``diffusion_trainer``, ``classifier_trainer``, ``resume``, ``distributed``
- :mod:`.evaluation` — ``measures``, ``metrics``, ``report``, ``run`` (``controlcg evaluate``)
- top level — ``pipeline`` (the main job), ``cli``, ``slicer_bridge``, ``resources``, ``progress``, ``figures``,
  ``overlay``
"""

__version__ = "0.1.0"

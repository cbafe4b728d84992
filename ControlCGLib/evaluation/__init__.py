"""Measuring counterfactuals against the simulator's truth: simulated subjects, metrics, one measuring function,
the augmentation experiment, the orchestration of ``controlcg evaluate`` and its report.
"""

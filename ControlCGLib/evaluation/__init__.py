"""Measuring counterfactuals against the simulator's truth (and real scans without it), as ``controlcg evaluate``
runs and reports it.
"""

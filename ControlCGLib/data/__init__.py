"""Anatomy and cohorts: the MNI template, the simulated cohort with true counterfactuals, ADNI-style CSV cohorts,
phantoms of other contrasts for the scan checks, and the toy problem.
"""

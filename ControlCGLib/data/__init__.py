"""The data the models learn from and are tested on, simulated with a known truth or read from real cohorts."""

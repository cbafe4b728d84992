"""Making counterfactuals: everything the one sampling loop needs, from its settings to the memory a run will take."""

"""Making counterfactuals: noise, the diffusion schedule and its steps, classifier-free guidance, attention
injection, the one sampling loop, the paper's baselines through that loop, and the memory a run will take.
"""

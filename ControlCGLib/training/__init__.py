"""Training: the diffusion loss, the diffusion and classifier trainers, exact resume state, torchrun's process
group.
"""

"""Training the diffusion model, the diagnostic classifier and the toy model, resumable and distributed."""

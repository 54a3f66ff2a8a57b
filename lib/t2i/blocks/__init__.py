"""The shared building blocks the chapters make their models of.

layers.py      attention, the transformer block, KV cache, residual block, timestep embedding
unet.py        the diffusion U-Net (time, label, caption conditions) and the noisy classifier
diffusion.py   Gaussian diffusion: schedules, losses, DDPM/DDIM, inversion, guidance
"""

"""Chapter 01 (notebook 01_dvae): images as tokens.

autoencoder.py  the tokenizers' encoder and decoder, their measures and recipe
dvae.py         DALL-E's discrete VAE (Gumbel-softmax, KL to a uniform prior): `DVAE`
vqvae.py        VQ-VAE (nearest code, straight-through, EMA codebook): `VQVAE`
"""

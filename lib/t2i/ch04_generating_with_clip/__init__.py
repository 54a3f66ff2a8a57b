"""Chapter 04 (notebook 04_generating_with_clip): images optimised through notebook 03's CLIP,
no model of their own.

  clip_optimization.py  the loop: augmented views, CLIP's loss, the judge against CLIP's score
  raster.py             a differentiable rasterizer of Bezier strokes
  clipdraw.py           CLIPDraw: strokes optimised (`CLIPDRAW`)
  vqgan_clip.py         VQGAN-CLIP: VQ-VAE codebook latents optimised (`VQGAN_CLIP`)
"""

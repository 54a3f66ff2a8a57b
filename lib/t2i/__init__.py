"""t2i: the text-to-image course's library, laid out as the course is.

  core/      the machinery: runtime, checkpoint cache, recipes, training loop, statistics
  world/     the shapes world (notebook 00): scenes, captions, tokenizer, judge, measures
  blocks/    the shared blocks: layers, U-Net, diffusion
  ch01_dvae/ .. ch07_unclip/   the chapters, in course order, one per notebook
  front/     the command line, Play panels, plots and checks

A module imports only its own package, the ones listed above it and earlier chapters
(tests/test_layout.py). Each model is one `Recipe` (`t2i.core.recipe`), e.g. `glide.GLIDE`.
"""

__version__ = "0.1.0"

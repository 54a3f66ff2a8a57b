"""unCLIP, or DALL-E 2 (Ramesh et al. 2022, arXiv 2204.06125): a caption becomes a CLIP image
embedding (the prior), and the embedding becomes an image (the decoder, then an upsampler).

    caption -> CLIP text embedding z_t -> prior -> CLIP image embedding z_i -> decoder -> 2x

The CLIP is notebook 03's (`clip.CLIP`), frozen. Its embeddings are unit vectors; every model
here sees them scaled by sqrt(dim), so that each component has about unit variance (as
DALLE2-pytorch's `image_embed_scale`).
  - `Decoder`: GLIDE's caption U-Net (`glide.Text2Im`) with z_i projected and added to the time
    embedding, and projected into 4 extra context tokens (paper sec. 2.1); z_i dropped 10% and
    the caption 50% of the time, for classifier-free guidance on both. It starts as notebook
    06's GLIDE base model (`build_decoder`), where the paper trains it from scratch.
  - `DiffusionPrior`: a causal transformer over [caption tokens, z_t, timestep, noised z_i,
    query] whose query output predicts the clean z_i (sec. 2.2); 2 samples per caption, the one
    with the higher z_t . z_i kept.
  - `ARPrior`: z_i reduced by PCA, each component quantized into buckets, the codes predicted one
    by one by a causal transformer after the caption, z_t and a token for the quantized z_t . z_i
    (sampled from the upper half at generation, sec. 2.2).
  - The upsampler is notebook 06's GLIDE upsampler, fine-tuned on blurred low-resolution inputs
    without the caption (sec. C).
The manipulations of sec. 3 live here too: variations (DDIM inversion, then decoding with eta),
`slerp` interpolation, text diffs, PCA reconstructions.

The parts, each importing only those above it:
  embeddings.py   CLIP's embeddings: paired data, embedding, slerp, text diffs
  decoder.py      the decoder; decode, invert, vary
  priors.py       the diffusion and AR priors, PCA
  edits.py        variations, text diffs, the typographic attack, measured
  recipes.py      configs, builds and training: DECODER, PRIOR_DIFFUSION, PRIOR_AR,
                  UNCLIP_UPSAMPLER; UNCLIP, the whole stack (`generate`)
"""

from __future__ import annotations

from t2i.ch06_glide import upsample  # noqa: F401  (GLIDE's; unCLIP's passes no caption)
from t2i.ch07_unclip.decoder import (  # noqa: F401
    N_CONTEXT_TOKENS,
    Decoder,
    decode,
    decoder_fn,
    invert,
    vary,
)
from t2i.ch07_unclip.edits import (  # noqa: F401
    FACTS,
    same_facts,
    short_caption,
    single_objects,
    text_diff_sweep,
    typographic_variations,
    variations,
)
from t2i.ch07_unclip.embeddings import (  # noqa: F401
    cosine,
    embed_image,
    embed_scale,
    embed_text,
    paired_data,
    pairs_of,
    slerp,
    text_diff,
)
from t2i.ch07_unclip.priors import (  # noqa: F401
    PCA,
    ARPrior,
    DiffusionPrior,
    Quantizer,
    best_of,
    pca_reconstruct,
    sample_ar_prior,
    sample_diffusion_prior,
)
from t2i.ch07_unclip.recipes import (  # noqa: F401
    DECODER,
    PRIOR_AR,
    PRIOR_DIFFUSION,
    RECIPES,
    UNCLIP,
    UNCLIP_UPSAMPLER,
    ar_prior_config,
    build_ar_prior,
    build_decoder,
    build_diffusion_prior,
    build_upsampler,
    decoder_config,
    generate,
    prior_config,
    train_ar_prior,
    train_decoder,
    train_diffusion_prior,
    upsampler_config,
)

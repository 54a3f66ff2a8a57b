"""GLIDE (Nichol et al. 2021, arXiv 2112.10741): diffusion conditioned on a caption, for
notebook 06 (and the decoder of 07, which adds a CLIP image embedding to it).

The models follow glide-text2im's `text2im_model.py`, small:
  - `TextEncoder`: a transformer over the caption tokens without a causal mask; padding
    positions get a learned embedding of their own (GLIDE's `xf_padding`).
  - `Text2Im`: the course's U-Net (`t2i.blocks.unet.UNet`) whose time embedding gets the projected
    output of the caption's last token (`cond`), and whose every attention layer reads all the
    caption's token outputs as extra keys and values (`context`). It starts as notebook 05's
    trained label model (`start_from_label_model`), where the paper trains from scratch.
  - `Upsampler`: the same, with the bilinearly upsampled low-resolution image as 3 extra input
    channels (GLIDE's `SuperResText2ImUNet`).
  - `Inpainter`: the same, with the masked image and the mask as 4 extra input channels
    (GLIDE's `InpaintText2ImUNet`), fine-tuned from the base model.
  - `NoisedCLIP`: CLIP whose image tower reads x_t and t, for CLIP guidance (GLIDE sec. 3.3).
Classifier-free guidance uses the empty caption as the null condition: 20% of training captions
are emptied (GLIDE sec. 4). Training captions mix full ones with partial ones ("a red circle"),
so what a student types is in distribution.

The parts, each importing only those above it:
  models.py       the networks: TextEncoder, Text2Im, Upsampler, Inpainter
  noised_clip.py  the noised CLIP and its guidance term
  sampling.py     guided eps, DDIM sampling, the upsampler's stage
  inpainting.py   masks, the two ways to inpaint, the erase-an-object task
  measures.py     how two-object samples fail
  recipes.py      configs, builds and training: GLIDE, GLIDE_UPSAMPLER, GLIDE_INPAINT, NOISED_CLIP
"""

from __future__ import annotations

from t2i.ch06_glide.inpainting import (  # noqa: F401
    inpaint,
    inpaint_score,
    inpaint_task,
    random_masks,
    square_masks,
)
from t2i.ch06_glide.measures import (  # noqa: F401
    FAILURES,
    failure_kinds,
)
from t2i.ch06_glide.models import (  # noqa: F401
    Inpainter,
    Text2Im,
    TextEncoder,
    Upsampler,
)
from t2i.ch06_glide.noised_clip import (  # noqa: F401
    NoisedCLIP,
    NoisedImageEncoder,
    clip_grad,
)
from t2i.ch06_glide.recipes import (  # noqa: F401
    GLIDE,
    GLIDE_INPAINT,
    GLIDE_UPSAMPLER,
    NOISED_CLIP,
    RECIPES,
    base_config,
    build_base,
    build_inpainter,
    build_noised_clip,
    build_upsampler,
    inpainter_config,
    noised_clip_config,
    start_from_label_model,
    train_base,
    train_inpainter,
    train_noised_clip,
    train_upsampler,
    upsampler_config,
)
from t2i.ch06_glide.sampling import (  # noqa: F401
    guided_model,
    sample,
    upsample,
)

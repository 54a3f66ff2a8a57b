"""CLIP: contrastive language-image pre-training (Radford et al. 2021, arXiv 2103.00020).

Two towers map an image and a caption into one space; training pulls the N matching pairs of a
batch together and pushes the N^2 - N others apart (the symmetric InfoNCE loss of the paper's
Figure 3 pseudocode):

    logits = exp(t) * normalize(I) @ normalize(T).T        t learnable, init log(1/0.07), <= log 100
    loss   = (cross_entropy(logits, targets) + cross_entropy(logits.T, targets.T)) / 2

Image tower: a small CNN that keeps the 4x4 spatial grid to the end (flattened, not pooled), so
position survives; at 32x32 it is several times cheaper than a ViT on CPU. Text tower: a causal
transformer (`layers.Block`) whose feature at the EOT token is the caption's embedding, as in
openai/CLIP's model.py.

Duplicates: a partial caption ("a red circle") is true of every red circle in the batch, so the
diagonal is not the only right answer. The target of row i spreads its probability equally over
every image that caption i truly describes (known from the scenes), instead of calling those
images negatives.

Serves notebook 03; notebooks 04, 06 and 07 build on its model.

The parts, each importing only those above it:
  model.py    the towers, the loss, the training data, config, build and training
  uses.py     search, zero-shot, retrieval, binding, the typographic attack, reranking
  recipes.py  `CLIP`, and `CLIP_READING` of the reading ablation
"""

from __future__ import annotations

from t2i.ch03_clip.model import (  # noqa: F401
    GREY,
    LOG_MAX_SCALE,
    CLIPModel,
    ImageEncoder,
    TextEncoder,
    build,
    contrastive_loss,
    default_config,
    eot_pool,
    labelled,
    make_pairs,
    train_clip,
)
from t2i.ch03_clip.recipes import (  # noqa: F401
    CLIP,
    CLIP_READING,
    READING_DATA,
    RECIPES,
    build_reading,
    get_reading_clip,
    reading_config,
    typographic_ablation,
)
from t2i.ch03_clip.uses import (  # noqa: F401
    CLASSES,
    POSITION_PHRASES,
    PREFIXES,
    TEMPLATES,
    best_of_n,
    binding_test,
    class_embeddings,
    clip_scores,
    embed_images,
    rerank,
    retrieval,
    search,
    single_object_test,
    typographic_attack,
    zero_shot,
    zero_shot_table,
)

"""The two priors of unCLIP (sec. 2.2) that turn a caption into a CLIP image embedding: the
diffusion prior (a causal transformer predicting z_i) and the autoregressive prior (PCA codes,
one at a time)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from t2i.blocks.diffusion import classifier_free, seeded_noise
from t2i.blocks.layers import Block, KVCache, timestep_embedding
from t2i.ch07_unclip.embeddings import embed_scale, embed_text
from t2i.core import runtime
from t2i.world.prompts import TOKENIZER, caption_tokens


class DiffusionPrior(nn.Module):
    """x0(z_i noised, t, tokens, text_embed): a causal transformer over [caption tokens, z_t, t,
    noised z_i, query]; the query's output is the predicted clean (scaled) z_i."""

    def __init__(self, d: int, layers: int, heads: int, embed: int):
        super().__init__()
        e = embed
        self.d = d
        self.tok = nn.Embedding(len(TOKENIZER), d)
        self.pos = nn.Parameter(torch.randn(TOKENIZER.context_length + 4, d) * 0.01)
        self.text_embed = nn.Linear(e, d)
        self.time = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.noised = nn.Linear(e, d)
        self.query = nn.Parameter(torch.randn(d) * 0.01)
        self.blocks = nn.ModuleList([Block(d, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        self.out = nn.Linear(d, e)

    def forward(self, x, t, tokens, text_embed):
        return self.out(self.hidden(x, t, tokens, text_embed)[:, -1])

    def hidden(self, x, t, tokens, text_embed):
        """The last block's normalized outputs at every position (n, S + 4, d)."""
        tokens = tokens[:, : int(TOKENIZER.eot_index(tokens).max()) + 1]
        n = len(x)
        h = torch.cat(
            [
                self.tok(tokens),
                self.text_embed(text_embed)[:, None],
                self.time(timestep_embedding(t, self.d))[:, None],
                self.noised(x)[:, None],
                self.query.expand(n, 1, -1),
            ],
            1,
        )
        h = h + self.pos[: h.shape[1]]
        for block in self.blocks:
            h = block(h, causal=True)
        return self.ln(h)


def best_of(candidates: torch.Tensor, text_embed: torch.Tensor) -> torch.Tensor:
    """candidates (n, k, e) -> (n, e): per row, the candidate with the highest dot product with
    its text embedding (n, e) (paper sec. 2.2: k = 2)."""
    scores = (candidates * text_embed[:, None]).sum(-1)
    return candidates[torch.arange(len(candidates)), scores.argmax(1)]


@torch.no_grad()
def sample_diffusion_prior(
    prior, diffusion, prompts, scale=1.0, steps=64, candidates=2, seed=0, eta=0.0
):
    """Unit image embeddings (n, e) for prompts: `candidates` DDIM samples per prompt (with
    classifier-free guidance at `scale`), the best by z_t . z_i kept."""
    prompts = list(prompts)
    dev = runtime.device_of(prior)
    e = prior.out.out_features
    s = embed_scale(e)
    zt = embed_text(prompts)
    tok, null = caption_tokens([p for p in prompts for _ in range(candidates)], dev)
    zt_rep = (zt * s).repeat_interleave(candidates, 0).to(dev)
    fn = classifier_free(
        prior,
        scale,
        dict(tokens=tok, text_embed=zt_rep),
        dict(tokens=null, text_embed=torch.zeros_like(zt_rep)),
    )
    gen = torch.Generator().manual_seed(seed)
    x = seeded_noise((len(tok), e), gen, dev)
    z = F.normalize(diffusion.ddim_sample(fn, x, steps, eta, None, gen), dim=-1).cpu()
    return best_of(z.view(len(prompts), candidates, e), zt)


class PCA(nn.Module):
    """Principal components of embeddings: `fit` stores the mean and the components, most
    variance first; `encode` keeps the first k coordinates, `decode` maps them back."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("components", torch.eye(dim))  # rows
        self.register_buffer("variance", torch.zeros(dim))

    @torch.no_grad()
    def fit(self, z: torch.Tensor) -> PCA:
        self.mean.copy_(z.mean(0))
        var, vecs = torch.linalg.eigh(torch.cov((z - self.mean).T.double()))
        order = var.argsort(descending=True)
        self.variance.copy_(var[order].clamp(min=0).float())
        self.components.copy_(vecs[:, order].T.float())
        return self

    def components_for(self, fraction: float) -> int:
        """How many components keep `fraction` of the variance (the paper: 319 of 1,024 keep
        99%)."""
        kept = self.variance.cumsum(0) / self.variance.sum()
        return int((kept < fraction).sum()) + 1

    def encode(self, z, k: int | None = None):
        return ((z - self.mean) @ self.components.T)[:, :k]

    def decode(self, c):
        return c @ self.components[: c.shape[1]] + self.mean


class Quantizer(nn.Module):
    """Each of k values into one of `buckets` equal-mass buckets (edges at the training data's
    quantiles); a bucket decodes to its median."""

    def __init__(self, k: int, buckets: int):
        super().__init__()
        self.register_buffer("edges", torch.zeros(k, buckets - 1))
        self.register_buffer("centres", torch.zeros(k, buckets))

    @torch.no_grad()
    def fit(self, c: torch.Tensor) -> Quantizer:
        b = self.centres.shape[1]
        self.edges.copy_(torch.quantile(c, torch.arange(1, b) / b, dim=0).T)
        self.centres.copy_(torch.quantile(c, (torch.arange(b) + 0.5) / b, dim=0).T)
        return self

    def encode(self, c):
        """Codes (n, k) long of values (n, k)."""
        return torch.stack(
            [torch.bucketize(c[:, j].contiguous(), self.edges[j]) for j in range(c.shape[1])], 1
        )

    def decode(self, codes):
        return torch.gather(self.centres.expand(len(codes), -1, -1), 2, codes[..., None])[..., 0]


class ARPrior(nn.Module):
    """p(codes | caption, z_t, dot): a causal transformer over [caption tokens, z_t, dot token,
    code_1 ... code_k]; code j is read off the output one position before it. The PCA, the
    codes' quantizer and the dot product's bucket edges are buffers, fitted before training."""

    def __init__(
        self, d: int, layers: int, heads: int, embed: int, components: int, buckets: int,
        dot_buckets: int,
    ):  # fmt: skip
        super().__init__()
        e, k = embed, components
        self.k, self.buckets = k, buckets
        self.pca = PCA(e)
        self.quantizer = Quantizer(k, buckets)
        self.register_buffer("dot_edges", torch.zeros(dot_buckets - 1))
        self.tok = nn.Embedding(len(TOKENIZER), d)
        self.pos = nn.Parameter(torch.randn(TOKENIZER.context_length, d) * 0.01)
        self.text_embed = nn.Linear(e, d)
        self.dot = nn.Embedding(dot_buckets, d)
        self.code = nn.Embedding(buckets, d)
        self.code_pos = nn.Parameter(torch.randn(k, d) * 0.01)
        self.blocks = nn.ModuleList([Block(d, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, buckets)

    def codes_of(self, z_img):
        return self.quantizer.encode(self.pca.encode(z_img, self.k))

    def embedding_of(self, codes):
        return F.normalize(self.pca.decode(self.quantizer.decode(codes)), dim=-1)

    def dot_bucket(self, z_txt, z_img):
        return torch.bucketize((z_txt * z_img).sum(-1).contiguous(), self.dot_edges)

    def prefix(self, tokens, z_txt, dot):
        tokens = tokens[:, : int(TOKENIZER.eot_index(tokens).max()) + 1]
        words = self.tok(tokens) + self.pos[: tokens.shape[1]]
        z = self.text_embed(z_txt * embed_scale(z_txt.shape[-1]))
        return torch.cat([words, z[:, None], self.dot(dot)[:, None]], 1)

    def run(self, h, cache=None):
        for block, c in zip(self.blocks, cache or [None] * len(self.blocks)):
            h = block(h, causal=True, cache=c)
        return self.head(self.ln(h))

    def forward(self, tokens, z_txt, dot, codes):
        """Logits (n, k, buckets) of every code given the ones before it."""
        p = self.prefix(tokens, z_txt, dot)
        h = torch.cat([p, self.code(codes[:, :-1]) + self.code_pos[: self.k - 1]], 1)
        return self.run(h)[:, p.shape[1] - 1 :]


@torch.no_grad()
def sample_ar_prior(prior: ARPrior, prompts, temperature: float = 1.0, seed: int = 0):
    """Unit image embeddings (n, e): the dot token drawn uniformly from the upper half of its
    buckets, then the k codes one at a time with a KV cache, decoded through the PCA."""
    prompts = list(prompts)
    dev = runtime.device_of(prior)
    gen = torch.Generator().manual_seed(seed)
    n_dot = len(prior.dot_edges) + 1
    dot = torch.randint(n_dot // 2, n_dot, (len(prompts),), generator=gen).to(dev)
    cache = [KVCache() for _ in prior.blocks]
    h = prior.prefix(TOKENIZER(prompts).to(dev), embed_text(prompts).to(dev), dot)
    codes = []
    for j in range(prior.k):
        logits = prior.run(h, cache)[:, -1].float() / temperature
        c = torch.multinomial(F.softmax(logits, -1).cpu(), 1, generator=gen)[:, 0].to(dev)
        codes.append(c)
        h = (prior.code(c) + prior.code_pos[j])[:, None]
    return prior.embedding_of(torch.stack(codes, 1)).cpu()


def pca_reconstruct(pca: PCA, z, k: int):
    """Unit embeddings rebuilt from their first k principal components."""
    z = z.to(pca.mean.device)
    return F.normalize(pca.decode(pca.encode(z, k)), dim=-1).cpu()

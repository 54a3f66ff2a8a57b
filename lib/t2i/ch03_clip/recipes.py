"""CLIP declared as a recipe, with the reading ablation: the course's CLIP fine-tuned on data
where written words sometimes carry the colour."""

from __future__ import annotations

from t2i.blocks.layers import count_parameters
from t2i.ch03_clip.model import CLIPModel, build, default_config, train_clip
from t2i.ch03_clip.uses import binding_test, retrieval, typographic_attack, zero_shot_table
from t2i.core import recipe, runtime
from t2i.core.stats import Rate


def reading_config(grey_text: float, **overrides) -> dict:
    """The typographic attack as an ablation of the data: the course's CLIP fine-tuned on data
    where a share grey_text of the written words carry the colour (on a grey object), or none
    (grey_text 0: every word agrees with the paint, as in the course's CLIP's data)."""
    base = default_config()
    cfg = dict(
        seed=1,
        model=dict(base=base),
        train=dict(
            base["train"], steps=runtime.pick(smoke=10, cpu=75, gpu=500), lr=5e-4, warmup=20
        ),
        data=dict(base["data"], grey_text=grey_text),
    )
    return recipe.sections(cfg, **overrides)


def build_reading(cfg: dict) -> CLIPModel:
    """A CLIP that starts as the course's CLIP (cfg["model"]["base"])."""
    model = build(cfg["model"]["base"])
    model.load_state_dict(CLIP.load(cfg["model"]["base"]).state_dict())
    return model


def get_reading_clip(grey_text: float) -> CLIPModel:
    """The course's CLIP fine-tuned by `reading_config(grey_text)`, from the cache or now."""
    return CLIP_READING.load(reading_config(grey_text))


READING_DATA = {"words agree with the paint": 0.0, "half the words carry the colour": 0.5}


def typographic_ablation(n: int = 300, seed: int = 7) -> dict[str, dict[str, Rate]]:
    """The attack (sentence templates) on two fine-tunes of the course's CLIP that differ only
    in their data (READING_DATA: the share of worded images whose object is grey)."""
    return {
        name: typographic_attack(get_reading_clip(grey), n, seed)["sentence templates"]
        for name, grey in READING_DATA.items()
    }


def _evaluation(seed: int) -> dict:
    """Zero-shot accuracy per attribute, retrieval and the binding test, as rows (seed 0: the
    notebook's test sets)."""
    model = CLIP.load()
    rows = zero_shot_table(model, seed=1234 + seed)
    return rows | {
        "retrieval": retrieval(model, seed=4321 + seed),
        "binding": binding_test(model, seed=99 + seed),
    }


CLIP = recipe.Recipe(
    "clip",
    config=default_config,
    build=build,
    train=train_clip,
    describe=lambda m: f"CLIP: {count_parameters(m):,} parameters, scale {m.scale():.1f}",
    evaluate=_evaluation,
)


CLIP_READING = recipe.Recipe("clip-reading", reading_config, build_reading, train_clip)


RECIPES = (CLIP,)

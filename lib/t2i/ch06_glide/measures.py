"""How GLIDE's two-object samples fail, by the judge's reading of the colours a prompt names."""

from __future__ import annotations

from t2i.world import grammar, judge, shapes

FAILURES = ("right", "both colours, one not a single object", "one colour only", "other")


def failure_kinds(images, prompts) -> list[str]:
    """How each sample of a multi-object prompt went, by the judge's reading of the colours the
    prompt names (one of FAILURES): "right" (count and colours right); "both colours, one not a
    single object" (every named colour there, one as mass that fits no one template: an extra
    object of that colour, or a smear); "one colour only" (a named colour missing, nothing of
    another colour: both objects in one colour, or one object alone); "other"."""
    reading, kinds = judge.read(images), []
    for i, prompt in enumerate(prompts):
        facts = grammar.parse_caption(prompt)
        row = judge.check(reading, i, facts)
        named = [shapes.COLOR_NAMES.index(o["color"]) for o in facts.objects if "color" in o]
        mass = reading.present[i] | reading.blob[i]
        if row["count"] and row.get("color", True):
            kinds.append(FAILURES[0])
        elif mass[named].all() and reading.blob[i][named].any():
            kinds.append(FAILURES[1])
        elif mass[named].sum() == 1 and mass.sum() == 1:
            kinds.append(FAILURES[2])
        else:
            kinds.append(FAILURES[3])
    return kinds

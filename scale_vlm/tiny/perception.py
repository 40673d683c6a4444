"""How well a tiny VLM perceives the benchmark's images: greedy captions of held-out scenes scored per attribute,
option lookups and direct answers (``scale-vlm build-base`` reports it for the shipped base)."""

from __future__ import annotations

import random

from ..bench.scenes import GRID, parse_caption, random_scene, render
from .base_examples import caption_prompt, direct_qa_example, lookup_example


def perception_report(model, processor, n: int = 200, seed: int = 12345, jitter: int = 0, size_jitter: int = 0,
                      batch_size: int = 50, progress: bool = False) -> dict:
    """Greedy captions of ``n`` held-out scenes, scored per attribute.

    occupancy: per cell, occupied vs empty (chance ~50%); colour / shape: per truly occupied cell, the caption
    names that cell with the right colour / shape (a missed object counts wrong; chance 25% / 33%);
    object: both right; lookup: option-letter lookups answered right (chance ~28%)."""
    from ..eval.adapters import EvalExample
    from ..eval.generate import generate_batch

    rng = random.Random(f"scale-vlm-perception|{seed}")
    scenes = [random_scene(rng) for _ in range(n)]
    examples = [EvalExample(id=str(i), images=[render(s, rng, jitter=jitter, size_jitter=size_jitter)], prompt=caption_prompt(), gold="")
                for i, s in enumerate(scenes)]
    lookups = [lookup_example(rng) for _ in range(n)]
    examples += [EvalExample(id=f"l{i}", images=[render(random_scene(rng))], prompt=p, gold=a) for i, (p, a) in enumerate(lookups)]
    direct = [direct_qa_example(rng) for _ in range(n)]
    examples += [EvalExample(id=f"q{i}", images=[render(sc)], prompt=p, gold=a) for i, (p, a, sc) in enumerate(direct)]
    outs = generate_batch(model, processor, examples, max_new_tokens=48, batch_size=batch_size, progress=progress)
    occ = col = shp = obj = total_obj = 0
    for scene, text in zip(scenes, outs[:n]):
        pred = parse_caption(text)
        truth = {o.cell: (o.colour, o.shape) for o in scene.objects}
        occ += sum((c in pred) == (c in truth) for c in range(GRID * GRID))
        for c, (colour, shape) in truth.items():
            p = pred.get(c)
            total_obj += 1
            col += p is not None and p[0] == colour
            shp += p is not None and p[1] == shape
            obj += p == (colour, shape)
    lookup_ok = sum(o.strip() == a for o, (_, a) in zip(outs[n:2 * n], lookups))
    direct_ok = sum(o.strip() == a for o, (_, a, _) in zip(outs[2 * n:], direct))
    return {
        "images": n,
        "occupancy": round(occ / (n * GRID * GRID), 4),
        "colour": round(col / total_obj, 4),
        "shape": round(shp / total_obj, 4),
        "object": round(obj / total_obj, 4),
        "lookup": round(lookup_ok / n, 4),
        "direct_qa": round(direct_ok / n, 4),
        "chance": {"occupancy": 0.5, "colour": 0.25, "shape": round(1 / 3, 4), "lookup": 0.28, "direct_qa": 0.3},
    }

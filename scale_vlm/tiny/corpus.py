"""The training text of the tiny tokenizer: every benchmark template and every base-stage example kind."""

from __future__ import annotations

import random
from collections.abc import Iterator

from ..bench.dataset import BenchConfig, iter_items
from ..bench.scenes import random_scene
from .base_examples import caption_prompt, lookup_example


def corpus_texts(seed: int = 0, per_setting: int = 300) -> Iterator[str]:
    """Deterministic text covering every template (all verbosities, letter and free-form answers, captions,
    lookups): the training corpus of the tiny tokenizer, so its vocabulary fits the benchmark. The traces are
    written in the ``lookup`` style with up to 6 objects, the settings the shipped base's tokenizer was trained on
    (pinned so a benchmark default never changes the tokenizer); the walk-through's
    words (``count``, ``found``) are in that vocabulary too, so both styles tokenize compactly."""
    for verbosity in (0, 1, 2):
        for letters in (0.0, 1.0):
            cfg = BenchConfig(seed=seed, num_examples=per_setting, split=f"corpus-{verbosity}-{letters}",
                              trace_verbosity=verbosity, option_letter_fraction=letters, teacher_error_rate=0.3,
                              trace_style="lookup", max_objects=6)
            for row in iter_items(cfg):
                yield row["prompt"]
                yield row["response"]
    rng = random.Random(f"scale-vlm-corpus|{seed}")
    for _ in range(per_setting * 2):
        yield caption_prompt() + " " + random_scene(rng).caption()
        p, a = lookup_example(rng)
        yield p + " " + a

"""The base stage of the embedded default: give the tiny Qwen2-VL perception (and the option lookup skill)
before any reasoning SFT, the way real VLMs arrive at SFT already pretrained.

This is pretraining of the default model, not the product's training loop, so it has its own small loop:
- captioning: ``List the objects in the grid.`` -> ``top left red circle, middle centre blue square.``;
- a per-cell auxiliary attribute head (one linear layer on the vision merger output: empty or colour x shape),
  trained alongside and discarded afterwards, which keeps image features distinct per cell;
- option lookup: ``Options: (A) 2 (B) 3 (C) 4 (D) 5. Which option is 3?`` -> ``B``.
Optional example kinds, off by default and off in the shipped base (probes in docs/benchmark.md): benchmark
questions answered directly, text-only reading questions about a caption, and captions asked after a benchmark
question. At fraction 0 they draw nothing from the random stream, so the default pool is unchanged.
Everything is seeded: ``scale-vlm build-base`` rebuilds the shipped weights.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..bench.scenes import COLOURS, GRID, SHAPES, Scene, random_scene, render
from ..eval.generate import reset_rope_cache
from .base_examples import (
    CONTEXT_CAPTION_INSTRUCTION,
    caption_prompt,
    direct_qa_example,
    lookup_example,
    reading_example,
)
from .corpus import corpus_texts
from .model import build_tiny_qwen2_vl

NUM_CELL_CLASSES = 1 + len(COLOURS) * len(SHAPES)  # 0 = empty


@dataclass
class BaseStageConfig:
    seed: int = 0
    steps: int = 600
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.1
    aux_weight: float = 1.0
    lookup_fraction: float = 0.3
    direct_qa_fraction: float = 0.0  # benchmark questions answered directly (no reasoning)
    reading_fraction: float = 0.0  # text-only questions about a caption (in-context retrieval)
    context_caption_fraction: float = 0.0  # captions asked after a benchmark question (perception at any offset)
    pool_size: int = 6000  # distinct training examples (scenes are re-drawn per example)
    jitter: int = 0
    size_jitter: int = 0
    num_threads: int = 1


def cell_labels(scene: Scene) -> list[int]:
    labels = [0] * (GRID * GRID)
    for o in scene.objects:
        labels[o.cell] = 1 + COLOURS.index(o.colour) * len(SHAPES) + SHAPES.index(o.shape)
    return labels


def _user(prompt: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]


def encode(processor, prompts: list[str], targets: list[str], images) -> dict:
    """Right-padded batch with labels only on the assistant text and its end-of-turn token."""
    tok = processor.tokenizer
    prompt_texts = [processor.apply_chat_template(_user(p), tokenize=False, add_generation_prompt=True) for p in prompts]
    full = [pt + t + "<|im_end|>" for pt, t in zip(prompt_texts, targets)]
    tok.padding_side = "right"
    batch = processor(text=full, images=[[im] for im in images], padding=True, return_tensors="pt")
    prompt_lens = [len(x) for x in processor(text=prompt_texts, images=[[im] for im in images], padding=False)["input_ids"]]
    labels = batch["input_ids"].clone()
    for i, n in enumerate(prompt_lens):
        labels[i, :n] = -100
    labels[batch["attention_mask"] == 0] = -100
    batch["labels"] = labels
    return dict(batch)


def make_pool(processor, cfg: BaseStageConfig, split: str, n: int, chunk: int = 250):
    """Pre-encoded examples (tensors) and per-cell labels for the base stage."""
    rng = random.Random(f"scale-vlm-base|{cfg.seed}|{split}")
    chunks = []
    for start in range(0, n, chunk):
        prompts, targets, images, cells = [], [], [], []
        for _ in range(min(chunk, n - start)):
            scene = random_scene(rng)  # drawn first for every kind, so the default pool's stream never changes
            u = rng.random()
            if u < cfg.lookup_fraction:
                p, a = lookup_example(rng)
            elif u < cfg.lookup_fraction + cfg.direct_qa_fraction:
                p, a, scene = direct_qa_example(rng)
            elif u < cfg.lookup_fraction + cfg.direct_qa_fraction + cfg.reading_fraction:
                p, a, scene = reading_example(rng)
            elif cfg.context_caption_fraction and rng.random() < cfg.context_caption_fraction:
                p, _, scene = direct_qa_example(rng, instruction=CONTEXT_CAPTION_INSTRUCTION)
                a = scene.caption()
            else:
                p, a = caption_prompt(), scene.caption()
            images.append(render(scene, rng, jitter=cfg.jitter, size_jitter=cfg.size_jitter))
            cells.append(cell_labels(scene))
            prompts.append(p)
            targets.append(a)
        batch = encode(processor, prompts, targets, images)
        batch["cell_labels"] = torch.tensor(cells)
        chunks.append(batch)
    return chunks


def _flatten(chunks) -> list[dict]:
    rows = []
    for b in chunks:
        n = b["input_ids"].shape[0]
        per = b["pixel_values"].shape[0] // n
        for i in range(n):
            length = int(b["attention_mask"][i].sum())
            rows.append({
                "input_ids": b["input_ids"][i, :length], "labels": b["labels"][i, :length],
                "mm_token_type_ids": b["mm_token_type_ids"][i, :length] if "mm_token_type_ids" in b else None,
                "pixel_values": b["pixel_values"][i * per:(i + 1) * per], "image_grid_thw": b["image_grid_thw"][i:i + 1],
                "cell_labels": b["cell_labels"][i],
            })
    return rows


def collate(rows: list[dict], pad_id: int) -> dict:
    n = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), n), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), n), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), n), dtype=torch.long)
    mm = torch.zeros((len(rows), n), dtype=torch.long)
    for i, r in enumerate(rows):
        k = len(r["input_ids"])
        ids[i, :k], labels[i, :k], mask[i, :k] = r["input_ids"], r["labels"], 1
        if r["mm_token_type_ids"] is not None:
            mm[i, :k] = r["mm_token_type_ids"]
    out = {
        "input_ids": ids, "labels": labels, "attention_mask": mask,
        "pixel_values": torch.cat([r["pixel_values"] for r in rows]),
        "image_grid_thw": torch.cat([r["image_grid_thw"] for r in rows]),
        "cell_labels": torch.stack([r["cell_labels"] for r in rows]),
    }
    if rows[0]["mm_token_type_ids"] is not None:
        out["mm_token_type_ids"] = mm
    return out


def _lr_lambda(cfg: BaseStageConfig):
    warm = max(1, int(cfg.steps * cfg.warmup_ratio))

    def f(step):
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, cfg.steps - warm)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def train_base(cfg: BaseStageConfig | None = None, progress: bool = True):
    """Build the tiny Qwen2-VL from scratch and run the base stage. Returns (model, processor, log)."""
    cfg = cfg or BaseStageConfig()
    torch.set_num_threads(cfg.num_threads)
    t0 = time.time()
    model, processor = build_tiny_qwen2_vl(corpus_texts(seed=0), seed=cfg.seed)
    rows = _flatten(make_pool(processor, cfg, "train", cfg.pool_size))
    prep_s = time.time() - t0
    torch.manual_seed(cfg.seed)
    head = nn.Linear(model.config.text_config.hidden_size, NUM_CELL_CLASSES)
    captured = {}
    hook = model.model.visual.merger.register_forward_hook(lambda m, i, o: captured.__setitem__("feats", o))
    params = list(model.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    order_rng = random.Random(f"scale-vlm-base-order|{cfg.seed}")
    pad = processor.tokenizer.pad_token_id
    model.train()
    log = []
    bar = tqdm(range(cfg.steps), desc="base stage", disable=not progress)
    t1 = time.time()
    for step in bar:
        batch = collate(order_rng.sample(rows, cfg.batch_size), pad)
        cells = batch.pop("cell_labels")
        reset_rope_cache(model)
        out = model(**batch)
        feats = captured["feats"]
        aux = nn.functional.cross_entropy(head(feats).view(-1, NUM_CELL_CLASSES), cells.view(-1))
        loss = out.loss + cfg.aux_weight * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 10 == 0 or step == cfg.steps - 1:
            log.append({"step": step, "lm_loss": round(out.loss.item(), 4), "aux_loss": round(aux.item(), 4)})
            bar.set_postfix(lm=f"{out.loss.item():.3f}", aux=f"{aux.item():.3f}")
    hook.remove()
    model.eval()
    reset_rope_cache(model)
    info = {"config": asdict(cfg), "prep_seconds": round(prep_s, 1), "train_seconds": round(time.time() - t1, 1), "log": log}
    return model, processor, info

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
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..bench.dataset import caption_prompt, corpus_texts, direct_qa_example, lookup_example, reading_example
from ..bench.scenes import COLOURS, GRID, ROWS, COLS, SHAPES, Scene, random_scene, render
from .model import build_tiny_qwen2_vl, load_tiny, save_tiny

CONTEXT_CAPTION_INSTRUCTION = "First list the objects in the grid."  # captioning after a benchmark question
SHIPPED_BASE = Path(__file__).resolve().parent.parent / "assets" / "tiny-base"
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
        model.model.rope_deltas = None
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
    model.model.rope_deltas = None
    info = {"config": asdict(cfg), "prep_seconds": round(prep_s, 1), "train_seconds": round(time.time() - t1, 1), "log": log}
    return model, processor, info


# ------------------------------------------------------------------------------------------------ perception

_ROW, _COL, _COLOUR, _SHAPE = ("(%s)" % "|".join(v) for v in (ROWS, COLS, COLOURS, SHAPES))
_CELL_RE = re.compile(rf"{_ROW} {_COL} {_COLOUR} {_SHAPE}")
_OBJECT_FIRST_RE = re.compile(rf"{_COLOUR} {_SHAPE} at {_ROW} {_COL}")


def parse_caption(text: str) -> dict[int, tuple[str, str]]:
    """``{cell: (colour, shape)}`` from a caption in either scan order (``top left red circle`` or
    ``red circle at top left``); the first mention of a cell wins."""
    found = [(m.start(), m.group(1), m.group(2), m.group(3), m.group(4)) for m in _CELL_RE.finditer(text)]
    found += [(m.start(), m.group(3), m.group(4), m.group(1), m.group(2)) for m in _OBJECT_FIRST_RE.finditer(text)]
    out = {}
    for _, row, col, colour, shape in sorted(found):
        out.setdefault(ROWS.index(row) * GRID + COLS.index(col), (colour, shape))
    return out


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


# ------------------------------------------------------------------------------------------------ shipping

def save_base(model, processor, path: str | Path, fp16: bool = True) -> Path:
    """Save (as fp16 safetensors by default: ~4 MB) for shipping."""
    if fp16:
        model = model.to(torch.float16)
    path = save_tiny(model, processor, path)
    if fp16:
        model.to(torch.float32)
    return path


def load_base(path: str | Path | None = None):
    """Load the base model (shipped one by default) in float32, ready for SFT on a CPU."""
    path = Path(path) if path is not None else SHIPPED_BASE
    model, processor = load_tiny(path)
    model = model.to(torch.float32)
    model.model.rope_deltas = None
    return model, processor


def has_shipped_base() -> bool:
    return (SHIPPED_BASE / "model.safetensors").is_file() and (SHIPPED_BASE / "config.json").is_file()


def get_base(cache_dir: str | Path | None = None, progress: bool = True):
    """The shipped base model if present, else a cached build in ``cache_dir``, else build (and cache) it."""
    if has_shipped_base():
        return load_base()
    if cache_dir is not None and (Path(cache_dir) / "model.safetensors").is_file():
        return load_base(cache_dir)
    model, processor, _ = train_base(progress=progress)
    if cache_dir is not None:
        save_base(model, processor, cache_dir)
        return load_base(cache_dir)
    return model, processor

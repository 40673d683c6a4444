"""``ScaleGRPOTrainer``: TRL's ``GRPOTrainer`` with scale-vlm's rewards and data, plus the GRPO prompt dataset.

A thin subclass. It supplies the default reward functions (accuracy and format, through the evaluator's parser
and scorer) weighted by the config, loads the processor without torchvision, pads prompts on the left (as TRL's
generation does), resets Qwen2-VL's cached rope offsets around generation, keeps the sampler off vision special tokens and adds two numbers to TRL's per-step logs: ``completion_tokens`` (tokens generated in
the step) and the running total ``generated_tokens`` (the GRPO cost measure of ``scale-vlm compare``). TRL itself
logs ``reward`` (weighted mean), ``rewards/accuracy_reward/mean``, ``rewards/format_reward/mean`` and
``completions/mean_length`` every step. It warns, once, when most of a step's completions ran out of
``max_completion_length`` (TRL's ``completions/clipped_ratio``): a reply cut off before ``</answer>`` earns no
reward, so GRPO would learn the budget rather than the task.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Sequence

import torch.distributed as dist
from transformers import TrainerCallback
from trl import GRPOTrainer
from trl.trainer.utils import get_config_model_id

from .data.render import chat_template_kwargs, reasoning_format
from .eval.adapters import EvalExample, load_eval_dataset
from .eval.evaluate import evaluate_model, score_completions
from .eval.generate import fsdp2_root_unsharded, generate_completions, reset_rope_cache
from .grpo_config import ScaleGRPOConfig
from .model_loading import load_checkpoint_weights
from .processors import load_processor
from .rewards import make_reward_funcs
from .run_guard import GRPO_DATA_COLUMNS, GRPO_FINGERPRINT_FIELDS, attach_run_fingerprint, check_resume
from .segments import DEFAULT_TAGS

logger = logging.getLogger(__name__)

# The share of a step's completions cut off by the budget above which GRPO is warned (once): a few long samples are
# normal at temperature 1, most of them means the budget is shorter than the policy's replies.
CLIPPED_WARNING_SHARE = 0.5


def clipped_warning(logs: dict, max_completion_length: int) -> str | None:
    """The warning for a logged GRPO step whose completions mostly hit ``max_completion_length``, else None."""
    share = logs.get("completions/clipped_ratio")
    if share is None or share < CLIPPED_WARNING_SHARE:
        return None
    return (f"GRPO: {share:.2f} of this step's completions reached max_completion_length {max_completion_length} "
            "before ending (completions/clipped_ratio): a reply cut off before its </answer> earns no accuracy or "
            "format reward, so GRPO learns the budget, not the task; raise max_completion_length above the "
            "policy's reply length (scale-vlm compare warns with 1.5x the longest SFT response)")

# ------------------------------------------------------------------------------------------- prompt dataset


def grpo_prompt(prompt: str, num_images: int = 1) -> list[dict]:
    """TRL's conversational VLM prompt: one user turn, image placeholders first (TRL fills them from ``image``)."""
    return [{"role": "user", "content": [{"type": "image"} for _ in range(num_images)] + [{"type": "text", "text": prompt}]}]


def to_grpo_dataset(examples: Iterable[EvalExample]):
    """A ``datasets.Dataset`` for GRPO from evaluation examples (any source ``scale-vlm eval`` reads): columns
    ``prompt`` (conversational), ``images`` (list of PIL images), ``answer`` (gold), ``choices`` and ``id``.
    The prompt text is the evaluator's, so the policy is trained on exactly what it is evaluated on."""
    import datasets

    rows = {"id": [], "prompt": [], "images": [], "answer": [], "choices": []}
    for ex in examples:
        rows["id"].append(ex.id)
        rows["prompt"].append(grpo_prompt(ex.prompt, len(ex.images)))
        rows["images"].append(list(ex.images))
        rows["answer"].append(ex.gold)
        rows["choices"].append(list(ex.choices))
    if not rows["id"]:
        raise ValueError("no examples for GRPO")
    return datasets.Dataset.from_dict(rows)


def load_grpo_dataset(name_or_path: str, split: str = "train", *, limit: int | None = None, seed: int = 0,
                      builtin_size: int = 500, image_only: bool = False, tags=None, **kwargs):
    """``builtin`` (the built-in benchmark's ``split`` stream), ScienceQA/IconQA or any local dataset, through the
    evaluator's adapters, as a GRPO prompt dataset."""
    extra = {"tags": tags} if tags is not None else {}
    examples = load_eval_dataset(name_or_path, split, limit=limit, seed=seed, builtin_size=builtin_size,
                                 image_only=image_only, **extra, **kwargs)
    return to_grpo_dataset(examples)


# ------------------------------------------------------------------------------------------------ greedy probe

def probe_share(num_questions: int, world_size: int, rank: int) -> tuple[list[int], list[int]]:
    """The questions rank ``rank`` of ``world_size`` evaluates: ``(its own, what it generates for)``. Its own are
    every ``world_size``-th question from ``rank`` (each question on exactly one rank); it generates for
    ``ceil(num_questions / world_size)`` of them on every rank, its own padded with a repeat of its last (question 0
    where it has none), so that every rank runs the same batches: the extra completions are dropped."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size} processes")
    mine = list(range(rank, num_questions, world_size))
    size = -(-num_questions // world_size)
    return mine, mine + [mine[-1] if mine else 0] * (size - len(mine))


class GreedyProbe(TrainerCallback):
    """Greedy accuracy of the policy on fixed questions during GRPO, before the first step and every ``every`` steps
    (and after the last). GRPO's reward is measured on sampled completions of the step's prompts: it can rise while
    the greedy answer, the one that is scored, stays put. The probe evaluates as ``scale-vlm eval`` does (same
    generation, parser and scorer) and appends ``{"step", "probe/accuracy", "probe/malformed_rate",
    "probe/budget_hit_rate", "probe/seconds"}`` rows to the trainer's log history. Greedy generation draws no random numbers, so the
    training run is the same with or without it; ``seconds`` is its total time, to keep out of training time.
    Monitoring only: nothing is selected by it. Under several processes each evaluates its share of the questions
    (:func:`probe_share`: the same number on every rank, generation synced across ranks, as a sharded model needs
    every rank in each forward pass); the completions are gathered and scored once, in question order, on every
    rank, so every rank logs the same row."""

    def __init__(self, examples: Sequence[EvalExample], every: int, *, processor=None, batch_size: int = 16,
                 max_new_tokens: int = 256, tags=None):
        if every < 1:
            raise ValueError(f"the probe's interval must be at least 1 step, got {every}")
        self.examples = list(examples)
        if not self.examples:
            raise ValueError("no questions for the greedy probe")
        self.processor, self.every = processor, every  # processor None: the trainer's processing_class
        self.batch_size, self.max_new_tokens, self.tags = batch_size, max_new_tokens, tags
        self.seconds = 0.0

    def evaluate(self, model, processor) -> tuple[dict, list[dict]]:
        """``(metrics, prediction rows)`` of the policy on the probe's questions, as ``scale-vlm eval`` scores them."""
        processor, tags = self.processor or processor, self.tags or DEFAULT_TAGS
        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if world == 1:
            return evaluate_model(model, processor, self.examples, batch_size=self.batch_size,
                                  max_new_tokens=self.max_new_tokens, tags=tags, progress=False)
        mine, padded = probe_share(len(self.examples), world, dist.get_rank())
        completions = generate_completions(model, processor, [self.examples[i] for i in padded],
                                           max_new_tokens=self.max_new_tokens, batch_size=self.batch_size,
                                           progress=False, tags=tags, synced_gpus=True)
        shares: list = [None] * world
        dist.all_gather_object(shares, list(zip(mine, completions)))
        gathered = sorted((pair for share in shares for pair in share), key=lambda pair: pair[0])
        if [i for i, _ in gathered] != list(range(len(self.examples))):  # a wrong share would mis-score silently
            raise RuntimeError(f"the probe gathered questions {[i for i, _ in gathered]}, "
                               f"expected each of the {len(self.examples)} once")
        return score_completions(self.examples, [c for _, c in gathered], processor, tags)

    def _probe(self, state, model, processor) -> None:
        t0 = time.perf_counter()
        metrics, _ = self.evaluate(model, processor)
        seconds = time.perf_counter() - t0
        self.seconds += seconds
        state.log_history.append({"step": state.global_step, "probe/accuracy": metrics["accuracy"],
                                  "probe/malformed_rate": metrics["malformed_rate"],
                                  "probe/budget_hit_rate": metrics["budget_hit_rate"], "probe/seconds": round(seconds, 2)})

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.global_step == 0:
            self._probe(state, model, processing_class)

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.global_step % self.every == 0 or state.global_step >= state.max_steps:
            self._probe(state, model, processing_class)


# ------------------------------------------------------------------------------------------------ trainer

VISION_TOKEN_ATTRS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id",
                      "image_token_index")


class ScaleGRPOTrainer(GRPOTrainer):
    """GRPO for ``<think>..</think><answer>..</answer>`` VLMs, starting from any SFT checkpoint (path or model)."""

    _tag_names = ["trl", "grpo", "scale-vlm"]
    _name = "ScaleGRPO"

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        # the checkpoint's key names are not the live module's: see load_checkpoint_weights
        if not load_checkpoint_weights(self, resume_from_checkpoint, model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def __init__(self, model, reward_funcs=None, args: ScaleGRPOConfig | None = None, train_dataset=None,
                 eval_dataset=None, processing_class=None, **kwargs):
        if args is None:
            args = ScaleGRPOConfig(output_dir="scale-grpo")
        if not isinstance(args, ScaleGRPOConfig):
            raise TypeError(f"args must be a ScaleGRPOConfig, got {type(args).__name__}")
        if processing_class is None:
            name = model if isinstance(model, str) else get_config_model_id(model.config)
            processing_class = load_processor(name, trust_remote_code=args.trust_remote_code)
        # The family's reasoning format: its generation prompt with thinking on, its completions read in the tags.
        args.chat_template_kwargs = {**chat_template_kwargs(processing_class), **(args.chat_template_kwargs or {})}
        if reward_funcs is None:
            reward_funcs = make_reward_funcs(("accuracy", "format"), tags=args.tags,
                                             reasoning=reasoning_format(processing_class, args.tags),
                                             tokenizer=getattr(processing_class, "tokenizer", processing_class))
        if isinstance(model, str):
            from .model_loading import load_model

            # a LoRA SFT run: its adapter trains on (from_pretrained would load it frozen, for inference)
            model = load_model(model, trust_remote_code=args.trust_remote_code, train_adapter=True,
                               **(args.model_init_kwargs or {}))
        if isinstance(reward_funcs, Sequence) and len(reward_funcs) != len(args.reward_weights):
            raise ValueError(f"{len(reward_funcs)} reward functions but {len(args.reward_weights)} reward_weights")
        tokenizer = getattr(processing_class, "tokenizer", processing_class)
        # TRL left-pads the prompt ids itself but takes mm_token_type_ids from a processor call that pads on the
        # tokenizer's side: a right-padding tokenizer misaligns them with the prompts (Qwen2-VL rope index error).
        tokenizer.padding_side = "left"
        if not args.use_vllm:
            # TRL suppresses the image token only; a sampled vision start/end or video token also breaks Qwen2-VL's
            # rope index (it counts them as images) in the loss forward.
            suppress = sorted({t for t in (getattr(model.config, name, None) for name in VISION_TOKEN_ATTRS)
                               if isinstance(t, int)})
            if suppress:
                user = dict(args.generation_kwargs or {})
                user["suppress_tokens"] = sorted(set(user.get("suppress_tokens") or []) | set(suppress))
                args.generation_kwargs = user
        self.generated_tokens = 0
        self.warned_clipped = False
        super().__init__(model=model, reward_funcs=reward_funcs, args=args, train_dataset=train_dataset,
                         eval_dataset=eval_dataset, processing_class=processing_class, **kwargs)
        if self.train_dataset is not None:
            # Every checkpoint records the prompts and settings it belongs to; train() refuses another run's.
            attach_run_fingerprint(self, GRPO_FINGERPRINT_FIELDS, GRPO_DATA_COLUMNS)

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        return super().train(check_resume(self, resume_from_checkpoint), *args, **kwargs)

    def _generate_single_turn(self, *args, **kwargs):
        reset_rope_cache(self.model)
        try:
            # The policy encodes the images before the root's forward (see fsdp2_root_unsharded). vLLM generates with
            # its own weights, and TRL's weight sync reads the policy's shards (DTensor.full_tensor): left alone.
            gathered = contextlib.nullcontext() if self.args.use_vllm else fsdp2_root_unsharded(self.model_wrapped)
            with gathered:
                return super()._generate_single_turn(*args, **kwargs)
        finally:
            reset_rope_cache(self.model)

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        reset_rope_cache(self.model)
        mode = "train" if self.model.training else "eval"
        tokens = self.accelerator.gather(output["completion_mask"].sum()).sum().item()
        if mode == "train":
            self.generated_tokens += int(tokens)
            self._metrics[mode]["completion_tokens"].append(float(tokens))
        return output

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training or "loss" in logs:
            logs["generated_tokens"] = float(self.generated_tokens)
        super().log(logs, start_time)  # TRL adds the step's generation metrics to ``logs`` here
        warning = None if self.warned_clipped else clipped_warning(logs, self.args.max_completion_length)
        if warning:
            self.warned_clipped = True
            logger.warning(warning)

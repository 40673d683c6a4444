"""What a model's ``forward`` does to its LM head's output, per transformers class: the fused head must apply the same
steps to its logits tiles (a logit scale, a softcap) to compute the model's own loss.

transformers writes these steps in each class's ``forward`` (``logits = logits * self.logit_scale``, Gemma's softcap
``logits / cap``, ``tanh``, ``* cap``); a config value alone does not say whether they run (Gemma3ForConditionalGeneration
carries ``final_logit_softcapping`` in its config and does not apply it). The table below lists every class of the
pinned transformers whose ``forward`` changes the logits after ``self.lm_head``; every other transformers class returns
the head's output as it is. ``tests/test_upstream_contract.py`` reads each class's ``forward`` source and checks the
table against it, so a transformers upgrade that changes a step fails there first.

A class defined outside transformers (remote code, a user's subclass with its own ``forward``), or a step listed as
unsupported, makes the fused head use the model's own logits instead (exact, more memory), with one warning.
"""

from __future__ import annotations

from dataclasses import dataclass

# The steps, in the order the forward applies them, each named by the config value it reads:
#   output_multiplier:       logits *= value        logit_scale: logits *= value (the model's attribute or config)
#   logits_scaling:          logits /= value        final_logit_softcapping: logits = cap * tanh(logits / cap)
_SOFTCAP = ("final_logit_softcapping",)
HEAD_STEPS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("AyaVisionForConditionalGeneration", "CohereForCausalLM", "Cohere2ForCausalLM",
                     "Cohere2MoeForCausalLM", "CohereCompassForCausalLM", "CohereCompassForConditionalGeneration"),
                    ("logit_scale",)),
    **dict.fromkeys(("GraniteForCausalLM", "GraniteMoeForCausalLM", "GraniteMoeHybridForCausalLM",
                     "GraniteMoeSWAForCausalLM", "GraniteMoeSharedForCausalLM", "GraniteSWAForCausalLM",
                     "Granite4VisionForConditionalGeneration", "GraniteDoclingForConditionalGeneration"),
                    ("logits_scaling",)),
    **dict.fromkeys(("BeamForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM", "Gemma3nForCausalLM",
                     "Gemma3nForConditionalGeneration",
                     "Gemma4ForCausalLM", "Gemma4ForConditionalGeneration", "Gemma4UnifiedForCausalLM",
                     "Gemma4UnifiedForConditionalGeneration", "PaliGemmaForConditionalGeneration",
                     "VaultGemmaForCausalLM", "NanoChatForCausalLM", "DiffusionGemmaForBlockDiffusion",
                     "MistralLarge4ForConditionalGeneration", "T5GemmaForConditionalGeneration",
                     "T5Gemma2ForConditionalGeneration"), _SOFTCAP),
    **dict.fromkeys(("MuseGlimmerForConditionalGeneration", "MuseSparkForConditionalGeneration"),
                    ("output_multiplier", *_SOFTCAP)),
}
# Classes whose post-head step the fused head does not reproduce: the step as the forward writes it.
UNSUPPORTED_HEAD_STEPS: dict[str, str] = {
    **dict.fromkeys(("Inkling2ForCausalLM", "Inkling2ForConditionalGeneration", "Inkling2LoopForCausalLM",
                     "Inkling2LoopForConditionalGeneration"), "logits = self.logit_softcap(logits)"),
    **dict.fromkeys(("InklingForCausalLM", "InklingForConditionalGeneration"),
                    "logits = logits[..., :unpadded_vocab_size]"),
    "ProphetNetForCausalLM": "logits = predict_logits[:, 0]",
    "ProphetNetForConditionalGeneration": "logits = predict_logits[:, 0]",
    "RecurrentGemmaForCausalLM": "logits = nn.functional.tanh(logits / cap) * cap",
    "xLSTMForCausalLM": "logits = soft_cap(logits, self.config.output_logit_soft_cap)",
}


@dataclass(frozen=True)
class HeadTransform:
    """What the model's ``forward`` does to ``lm_head``'s output: ``z = logit_scale * r``, then
    ``softcap * tanh(z / softcap)`` if ``softcap`` is set. ``unsupported`` names a step the fused head cannot
    reproduce (the fused path then falls back to the model's own logits)."""

    logit_scale: float = 1.0
    softcap: float | None = None
    unsupported: str | None = None


def forward_class(model) -> type:
    """The class whose ``forward`` the model runs (a subclass that does not override it runs its parent's)."""
    return next(cls for cls in type(model).__mro__ if "forward" in vars(cls))


def head_transform(model) -> HeadTransform:
    """The post-head steps of ``model`` (``HEAD_STEPS`` of the class whose ``forward`` it runs) with their values from
    its config; a softcap whose config value is None is skipped, as the model's ``if ... is not None`` does."""
    cls = forward_class(model)
    if not cls.__module__.startswith("transformers."):
        return HeadTransform(unsupported=f"{cls.__name__}.forward is not a transformers class's, so its steps after "
                                         "the LM head are not known")
    if cls.__name__ in UNSUPPORTED_HEAD_STEPS:
        return HeadTransform(unsupported=f"{cls.__name__} applies {UNSUPPORTED_HEAD_STEPS[cls.__name__]!r} after the "
                                         "LM head")
    text_config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config

    def value(name):
        v = getattr(text_config, name, None)
        return getattr(model.config, name, None) if v is None else v

    scale, softcap = 1.0, None
    for step in HEAD_STEPS.get(cls.__name__, ()):
        if step == "final_logit_softcapping":
            softcap = value(step)
        elif step == "logit_scale":
            scale *= float(getattr(model, "logit_scale", None) or value(step))
        elif step == "logits_scaling":
            scale /= float(value(step))
        elif step == "output_multiplier":
            scale *= float(value(step))
        else:
            raise ValueError(f"HEAD_STEPS[{cls.__name__!r}]: unknown step {step!r}")
    return HeadTransform(logit_scale=scale, softcap=None if softcap is None else float(softcap))

"""The fused loss path equals the plain path: loss and gradients, standalone and through the trainer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scale_vlm.fused_loss import add_fused_lm_head, chunked_token_nll, fused_segment_loss, weighted_token_nll
from scale_vlm.loss import SegmentCounts, per_token_nll, scale_loss, segment_token_weights, vanilla_loss
from scale_vlm.sft_config import ScaleSFTConfig
from scale_vlm.sft_trainer import ScaleSFTTrainer


def _inputs(T=37, H=16, V=50, dtype=torch.float64, seed=0, bias=False):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(T, H, generator=g, dtype=dtype).requires_grad_()
    weight = torch.randn(V, H, generator=g, dtype=dtype).requires_grad_()
    b = torch.randn(V, generator=g, dtype=dtype).requires_grad_() if bias else None
    labels = torch.randint(0, V, (T,), generator=g)
    labels[::5] = -100  # ignored positions, incl. the first one
    upstream = torch.randn(T, generator=g, dtype=dtype)
    return hidden, weight, b, labels, upstream


def _reference(hidden, weight, bias, labels):
    logits = hidden @ weight.t() + (0 if bias is None else bias)
    return F.cross_entropy(logits, labels, ignore_index=-100, reduction="none")


@pytest.mark.parametrize("chunk_size", [1, 8, 37, 1000])  # 8 does not divide T = 37
@pytest.mark.parametrize("bias", [False, True])
def test_chunked_token_nll_matches_cross_entropy(chunk_size, bias):
    hidden, weight, b, labels, upstream = _inputs(bias=bias)
    params = [hidden, weight] + ([b] if bias else [])
    ref = _reference(hidden, weight, b, labels)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), params)
    nll = chunked_token_nll(hidden, weight, labels, chunk_size=chunk_size, bias=b)
    grads = torch.autograd.grad((nll * upstream).sum(), params)
    assert nll.shape == (37,) and torch.all(nll[labels == -100] == 0)
    torch.testing.assert_close(nll, ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_chunked_token_nll_gradcheck():
    hidden, weight, _, labels, _ = _inputs(T=11, H=4, V=9)
    assert torch.autograd.gradcheck(lambda h, w: chunked_token_nll(h, w, labels, chunk_size=4), (hidden, weight))


def test_chunked_token_nll_fp32_and_all_ignored():
    hidden, weight, _, labels, upstream = _inputs(T=64, H=32, V=300, dtype=torch.float32)
    ref = _reference(hidden, weight, None, labels)
    nll = chunked_token_nll(hidden, weight, labels, chunk_size=10)
    torch.testing.assert_close(nll, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.autograd.grad((nll * upstream).sum(), weight)[0],
                               torch.autograd.grad((ref * upstream).sum(), weight)[0], rtol=1e-4, atol=1e-5)
    none = torch.full_like(labels, -100)
    out = chunked_token_nll(hidden, weight, none, chunk_size=10)
    gh, gw = torch.autograd.grad(out.sum(), (hidden, weight))
    assert torch.all(out == 0) and torch.all(gh == 0) and torch.all(gw == 0)


@pytest.mark.parametrize("chunk_size", [3, 1024])
@pytest.mark.parametrize("bias", [False, True])
def test_weighted_token_nll_matches_cross_entropy(chunk_size, bias):
    hidden, weight, b, labels, coef = _inputs(bias=bias)
    params = [hidden, weight] + ([b] if bias else [])
    ref = _reference(hidden, weight, b, labels)
    ref_loss = (ref * coef).sum()
    ref_grads = torch.autograd.grad(3.0 * ref_loss, params)  # an upstream scalar other than 1
    loss, nll, is_top1 = weighted_token_nll(hidden, weight, labels, coef, chunk_size=chunk_size, bias=b)
    grads = torch.autograd.grad(3.0 * loss, params)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(nll, ref.detach(), rtol=1e-12, atol=1e-12)
    assert not nll.requires_grad
    logits = (hidden @ weight.t() + (0 if b is None else b)).detach()
    valid = labels != -100
    assert torch.equal(is_top1[valid], logits.argmax(-1)[valid] == labels[valid])
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def _segments(seed=0, B=4, T=30):
    g = torch.Generator().manual_seed(seed)
    seg = torch.randint(0, 3, (B, T), generator=g)
    seg[1, :] = torch.where(seg[1] == 2, 1, seg[1])  # an example without answer tokens
    nll = torch.rand(B, T, generator=g, dtype=torch.float64) * (seg > 0)
    return seg, nll


def _loss_written_out(nll, seg, method, w_think, w_answer, normalization, counts):
    """The paper's formulas with explicit loops over examples and tokens: the independent reference."""
    rows = [([n for n, s in zip(nll[b].tolist(), seg[b].tolist()) if s == 1],
             [n for n, s in zip(nll[b].tolist(), seg[b].tolist()) if s == 2]) for b in range(len(seg))]
    think_tokens = counts.think_tokens if counts else sum(len(t) for t, _ in rows)
    answer_tokens = counts.answer_tokens if counts else sum(len(a) for _, a in rows)
    if method == "vanilla":
        tokens = counts.tokens if counts else think_tokens + answer_tokens
        return sum(sum(t) + sum(a) for t, a in rows) / tokens
    if normalization == "batch":
        return w_think * sum(sum(t) for t, _ in rows) / think_tokens + \
            w_answer * sum(sum(a) for _, a in rows) / answer_tokens
    think_examples = counts.think_examples if counts else sum(1 for t, _ in rows if t)
    answer_examples = counts.answer_examples if counts else sum(1 for _, a in rows if a)
    return w_think * sum(sum(t) / len(t) for t, _ in rows if t) / think_examples + \
        w_answer * sum(sum(a) / len(a) for _, a in rows if a) / answer_examples


@pytest.mark.parametrize("method,normalization", [("scale", "sample"), ("scale", "batch"), ("vanilla", "sample")])
@pytest.mark.parametrize("global_counts", [False, True])
def test_segment_token_weights_are_the_written_out_formulas(method, normalization, global_counts):
    # row 1 has no answer token, so a presence count that counted every example would change the "sample" loss
    seg, nll = _segments()
    counts = SegmentCounts(think_tokens=200, answer_tokens=90, think_examples=9, answer_examples=7, tokens=290) \
        if global_counts else None
    coef = segment_token_weights(seg, method, 0.7, 0.3, normalization, counts, dtype=torch.float64)
    want = _loss_written_out(nll, seg, method, 0.7, 0.3, normalization, counts)
    assert (coef * nll).sum().item() == pytest.approx(want, rel=1e-12)
    # the plain path's loss is the same function of the NLL
    got = (scale_loss(nll, seg, 0.7, 0.3, normalization, counts) if method == "scale"
           else vanilla_loss(nll, seg, counts)).loss
    assert got.item() == pytest.approx(want, rel=1e-12)


# -- through the trainer ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trainer_and_batch(tiny_qwen_dir, messages_dataset, tmp_path_factory):
    from scale_vlm.tiny.shipped import load_base

    torch.manual_seed(0)
    model, processor = load_base(tiny_qwen_dir)
    args = ScaleSFTConfig(output_dir=str(tmp_path_factory.mktemp("fused") / "out"), max_steps=1,
                          per_device_train_batch_size=4, save_strategy="no", use_cpu=True, seed=0,
                          max_length=256, dataloader_num_workers=0)
    trainer = ScaleSFTTrainer(model=model, args=args, train_dataset=messages_dataset, processing_class=processor)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in (0, 1)])
    trainer.model.train()
    return trainer, batch


def _loss_and_grads(trainer, batch, fn):
    model = trainer.model
    model.zero_grad(set_to_none=True)
    loss = fn(model, dict(batch))
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.detach(), grads


_PLAIN: dict[tuple[str, str], tuple] = {}


def _plain(trainer, batch, method, normalization):
    # The trainer's plain path (full logits), computed once per (method, normalization) for both tests below.
    if (method, normalization) not in _PLAIN:
        trainer.args.method, trainer.args.normalization, trainer.args.loss_impl = method, normalization, "plain"
        _PLAIN[method, normalization] = _loss_and_grads(trainer, batch, lambda m, b: trainer.compute_loss(m, b))
        trainer.args.loss_impl = "fused"
    return _PLAIN[method, normalization]


def _assert_same(a, b):
    (loss_a, grads_a), (loss_b, grads_b) = a, b
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-5)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize("method,normalization", [("scale", "sample"), ("scale", "batch"),
                                                  ("vanilla", "sample"), ("vanilla", "batch")])
def test_trainer_fused_and_plain_give_the_same_loss_and_gradients(trainer_and_batch, method, normalization):
    trainer, batch = trainer_and_batch
    plain = _plain(trainer, batch, method, normalization)
    trainer.args.method, trainer.args.normalization, trainer.args.loss_impl = method, normalization, "fused"
    fused = _loss_and_grads(trainer, batch, lambda m, b: trainer.compute_loss(m, b))
    assert plain[0] > 0
    _assert_same(fused, plain)


@pytest.mark.parametrize("method,normalization", [("scale", "sample"), ("scale", "batch"),
                                                  ("vanilla", "sample"), ("vanilla", "batch")])
def test_fused_segment_loss_matches_the_trainer_plain_path(trainer_and_batch, method, normalization):
    trainer, batch = trainer_and_batch
    plain = _plain(trainer, batch, method, normalization)
    add_fused_lm_head(trainer.model)
    w_think, w_answer = trainer.args.weight_schedule(0.0)

    def fused(model, b):
        seg = b.pop("segment_ids")[:, 1:]
        out, outputs = fused_segment_loss(model, b, seg, method, w_think, w_answer, normalization)
        # the detached NLL is the plain path's NLL too
        with torch.no_grad():
            ref = per_token_nll(model(**{k: v for k, v in b.items() if k != "labels"}, use_cache=False).logits,
                                b["labels"])
        torch.testing.assert_close(outputs.nll, ref.detach(), rtol=1e-5, atol=1e-5)
        assert outputs.label_mask.sum() == (b["labels"][:, 1:] != -100).sum()
        return out.loss

    _assert_same(_loss_and_grads(trainer, batch, fused), plain)


def test_weighted_token_nll_under_no_grad_skips_the_gradient():
    hidden, weight, _, labels, coef = _inputs()
    with torch.no_grad():
        loss, nll, _ = weighted_token_nll(hidden, weight, labels, coef, chunk_size=8)
    assert not loss.requires_grad
    torch.testing.assert_close(nll, _reference(hidden, weight, None, labels).detach())


# -- the head's own post-processing: logit scale (Cohere, Granite) and softcapping (Gemma) ---------------------------

@pytest.mark.parametrize("scale,softcap", [(0.25, None), (1.0, 2.0), (3.0, 1.5)])
@pytest.mark.parametrize("bias", [False, True])
def test_scaled_and_softcapped_heads_match_cross_entropy(scale, softcap, bias):
    hidden, weight, b, labels, coef = _inputs(bias=bias)
    params = [hidden, weight] + ([b] if bias else [])

    def transformed(h, w, bb):
        z = (h @ w.t() + (0 if bb is None else bb)) * scale
        return softcap * torch.tanh(z / softcap) if softcap else z

    ref = F.cross_entropy(transformed(hidden, weight, b), labels, ignore_index=-100, reduction="none")
    ref_grads = torch.autograd.grad(2.0 * (ref * coef).sum(), params, retain_graph=True)
    loss, nll, is_top1 = weighted_token_nll(hidden, weight, labels, coef, chunk_size=8, bias=b, logit_scale=scale,
                                            softcap=softcap)
    torch.testing.assert_close(loss, (ref * coef).sum(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(nll, ref.detach(), rtol=1e-12, atol=1e-12)
    for got, want in zip(torch.autograd.grad(2.0 * loss, params), ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # the general per-token path (backward recomputes the tile) too
    nll2 = chunked_token_nll(hidden, weight, labels, chunk_size=5, bias=b, logit_scale=scale, softcap=softcap)
    torch.testing.assert_close(nll2, ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(torch.autograd.grad((nll2 * coef).sum(), params),
                         torch.autograd.grad((ref * coef).sum(), params)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # the transform really changes the loss here (the test is not vacuous)
    plain = _reference(hidden, weight, b, labels)
    assert not torch.allclose(plain, ref)


def _tiny_text_model(kind: str, **extra):
    """fp64 tiny causal LMs from config (no download): Gemma-3 text (softcap), Cohere (logit_scale), Granite
    (logits_scaling), Llama (none); Aya Vision, a VLM whose forward scales by its text config's logit_scale, run on
    text alone."""
    import transformers as tf

    common = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if kind == "gemma3":
        config = tf.Gemma3TextConfig(**common, head_dim=16, final_logit_softcapping=2.0, sliding_window=16, **extra)
        cls = tf.Gemma3ForCausalLM
    elif kind == "cohere":
        config, cls = tf.CohereConfig(**common, logit_scale=0.3, **extra), tf.CohereForCausalLM
    elif kind == "granite":
        config, cls = tf.GraniteConfig(**common, logits_scaling=4.0, **extra), tf.GraniteForCausalLM
    elif kind == "aya_vision":
        vision = dict(model_type="siglip_vision_model", hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, image_size=28, patch_size=14)
        config = tf.AyaVisionConfig(text_config=tf.Cohere2Config(**common, head_dim=16, logit_scale=0.3, **extra),
                                    vision_config=vision, image_token_index=63)
        cls = tf.AyaVisionForConditionalGeneration
    else:
        config, cls = tf.LlamaConfig(**common, **extra), tf.LlamaForCausalLM
    torch.manual_seed(0)
    model = cls(config).double()
    with torch.no_grad():  # larger weights: logits of order 10, where a softcap of 2 changes the loss a lot
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model


def _text_batch(V=64, B=3, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (B, T), generator=g)
    labels = ids.clone()
    labels[:, :4] = -100  # a prompt
    labels[1, 9:] = -100
    weights = torch.rand(B, T - 1, generator=g, dtype=torch.float64)
    return ids, labels, weights


def _fused_vs_plain(model, ids, labels, weights, tol=1e-9):
    """Loss and gradients of the fused head and of the model's own logits + F.cross_entropy, same weights (fp64)."""
    import copy

    ref_model = copy.deepcopy(model)
    logits = ref_model(input_ids=ids).logits[:, :-1]  # [B, T-1, V], whatever the model does after its head
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), reduction="none",
                          ignore_index=-100).view(weights.shape)
    ref_loss = (weights * nll).sum()
    ref_loss.backward()
    add_fused_lm_head(model)
    out = model(input_ids=ids, labels=labels, fused_token_weights=weights)
    out.loss.backward()
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=tol, atol=tol * 1e-2, msg=name)
    torch.testing.assert_close(out.loss, ref_loss, rtol=tol, atol=tol * 1e-2)
    return out, ref_loss


@pytest.mark.parametrize("kind,expected", [("gemma3", (1.0, 2.0)), ("cohere", (0.3, None)),
                                           ("granite", (0.25, None)), ("aya_vision", (0.3, None)),
                                           ("llama", (1.0, None))])
def test_fused_head_reproduces_the_model_post_head_transform(kind, expected):
    from scale_vlm.head_transform import head_transform

    model = _tiny_text_model(kind)
    t = head_transform(model)
    assert (t.logit_scale, t.softcap, t.unsupported) == (pytest.approx(expected[0]), expected[1], None)
    ids, labels, weights = _text_batch()
    out, ref_loss = _fused_vs_plain(model, ids, labels, weights)
    assert ref_loss > 0 and out.nll.shape == (3, 11)
    from transformers.utils import ModelOutput

    assert isinstance(out, ModelOutput)  # engines find the loss tensor in a ModelOutput


def test_gemma3_softcap_off_when_config_says_none():
    from scale_vlm.head_transform import head_transform

    model = _tiny_text_model("gemma3")
    model.config.final_logit_softcapping = None  # the model's `if ... is not None` skips the softcap
    assert head_transform(model).softcap is None
    _fused_vs_plain(model, *_text_batch())


def test_gemma3_conditional_generation_applies_no_softcap():
    # transformers' Gemma3ForConditionalGeneration.forward returns lm_head(hidden) as is, even when its text config
    # carries final_logit_softcapping: the fused head must follow the forward, not the config.
    import transformers as tf

    from scale_vlm.head_transform import head_transform

    text = dict(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=2, head_dim=16, final_logit_softcapping=2.0, sliding_window=16, pad_token_id=0)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                  patch_size=14)
    config = tf.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4, image_token_index=299,
                             boi_token_index=297, eoi_token_index=298)
    torch.manual_seed(0)
    model = tf.Gemma3ForConditionalGeneration(config).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    t = head_transform(model)
    assert (t.logit_scale, t.softcap, t.unsupported) == (1.0, None, None)
    ids, labels, weights = _text_batch(V=290)
    _fused_vs_plain(model, ids, labels, weights)


class _ShiftedLogitsLM(__import__("transformers").LlamaForCausalLM):
    """A head step the fused head does not know: it must fall back to the model's own logits, not ignore it."""

    def forward(self, input_ids=None, **kwargs):
        hidden_states = self.model(input_ids=input_ids, **kwargs).last_hidden_state
        logits = self.lm_head(hidden_states)
        logits = logits + self.lm_head.weight.sum(-1)
        return __import__("transformers").modeling_outputs.CausalLMOutputWithPast(logits=logits)


def _fallback_case(model):
    ids, labels, weights = _text_batch()
    with pytest.warns(UserWarning, match="fused loss head") as record:
        out, _ = _fused_vs_plain(model, ids, labels, weights)
        model(input_ids=ids, labels=labels, fused_token_weights=weights)  # a second call: no second warning
    assert len([w for w in record if "fused loss head" in str(w.message)]) == 1
    return out


def test_unknown_post_head_step_falls_back_to_the_plain_path():
    from scale_vlm.head_transform import head_transform

    config = _tiny_text_model("llama").config
    torch.manual_seed(0)
    model = _ShiftedLogitsLM(config).double()
    assert "not a transformers class" in head_transform(model).unsupported
    _fallback_case(model)


@pytest.mark.parametrize("peft_kind", ["lora_on_lm_head", "modules_to_save"])
def test_peft_wrapped_lm_head_falls_back_to_the_plain_path(peft_kind):
    from peft import LoraConfig, get_peft_model

    model = _tiny_text_model("cohere")  # with a logit scale: the fallback keeps it as well
    if peft_kind == "lora_on_lm_head":
        config = LoraConfig(r=2, target_modules=["lm_head", "q_proj"], init_lora_weights="gaussian")
    else:
        config = LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"], init_lora_weights="gaussian")
    torch.manual_seed(1)
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # LoRA B starts at 0: make the adapter change the logits
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.5)
            if "modules_to_save" in n:
                p.add_(0.3)
    base = peft_model.get_base_model()
    out = _fallback_case(base)
    assert out.loss.requires_grad is False or out.loss.grad_fn is not None


def test_deepcopy_of_a_patched_model_runs_its_own_weights():
    import copy

    model = _tiny_text_model("llama")
    add_fused_lm_head(model)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.lm_head.weight.mul_(2.0)
    ids, _, _ = _text_batch()
    torch.testing.assert_close(twin(input_ids=ids).logits, twin.lm_head(twin.model(input_ids=ids).last_hidden_state))


def test_tensor_context_and_sequence_parallel_are_refused():
    import types

    from accelerate.utils import DistributedType

    from scale_vlm.parallelism import check_data_parallel_only

    def fake(tp=1, cp=1, sp=1, ds_sp=None):
        state = types.SimpleNamespace(deepspeed_plugin=types.SimpleNamespace(
            hf_ds_config=types.SimpleNamespace(config={"sequence_parallel_size": ds_sp} if ds_sp else {})))
        return types.SimpleNamespace(get_tp_size=lambda: tp, get_cp_size=lambda: cp, get_sp_size=lambda: sp,
                                     is_deepspeed_enabled=ds_sp is not None,
                                     accelerator=types.SimpleNamespace(state=state,
                                                                       distributed_type=DistributedType.MULTI_GPU))

    check_data_parallel_only(fake())  # plain data parallelism passes
    check_data_parallel_only(fake(ds_sp=1))
    for kwargs, what in [({"tp": 2}, "tensor parallel size 2"), ({"cp": 4}, "context parallel size 4"),
                         ({"sp": 2}, "sequence parallel size 2"), ({"ds_sp": 2}, "DeepSpeed sequence parallel size 2")]:
        with pytest.raises(ValueError, match=what):
            check_data_parallel_only(fake(**kwargs))


def test_trainer_refuses_a_tensor_parallel_model(tiny_qwen_dir, messages_dataset, tmp_path, monkeypatch):
    from scale_vlm.tiny.shipped import load_base

    model, processor = load_base(tiny_qwen_dir)
    # Trainer.get_tp_size reads model._tp_size (from_pretrained with a tp_plan), DeepSpeed AutoTP or accelerate
    monkeypatch.setattr(ScaleSFTTrainer, "get_tp_size", lambda self: 2)
    args = ScaleSFTConfig(output_dir=str(tmp_path / "out"), max_steps=1, use_cpu=True, save_strategy="no",
                          dataloader_num_workers=0)
    with pytest.raises(ValueError, match="data parallelism only.*tensor parallel size 2"):
        ScaleSFTTrainer(model=model, args=args, train_dataset=messages_dataset, processing_class=processor)

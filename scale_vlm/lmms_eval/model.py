"""``--model scale_vlm``: an lmms-eval model that generates exactly as ``scale-vlm eval`` does.

It loads the checkpoint as ``scale-vlm eval`` does (``AutoModelForImageTextToText`` + scale-vlm's processor loader,
which also reads the image-only processors scale-vlm saves) and generates with
:func:`scale_vlm.eval.generate.generate_batch`: the model's chat template over one user turn (images, then the
task's text), greedy, batched with left padding. So an lmms-eval run and a ``scale-vlm eval`` run of the same
checkpoint and data give the same outputs. lmms-eval finds the class through the ``lmms_eval.models`` entry point
that ``pip install scale-vlm[lmms-eval]`` registers; this module imports lmms-eval and is loaded only by it.
"""

from __future__ import annotations

from lmms_eval.api.model import lmms

from ..eval.adapters import EvalExample
from ..eval.generate import generate_batch

# lmms-eval passes these with every model; their values are lmms-eval's business (not generation settings).
_IGNORED_ARGS = ("max_batch_size",)


def _greedy_budget(gen_kwargs: dict, task: str) -> int:
    """The ``max_new_tokens`` of a greedy request; sampling settings are refused (scale-vlm eval is greedy)."""
    temperature = gen_kwargs.get("temperature") or 0
    if gen_kwargs.get("do_sample") or float(temperature) > 0 or int(gen_kwargs.get("num_beams", 1) or 1) != 1:
        raise ValueError(
            f"task {task}: the scale_vlm model generates greedily (as scale-vlm eval does) but the task asks for "
            f"{ {k: gen_kwargs[k] for k in ('do_sample', 'temperature', 'num_beams') if k in gen_kwargs} }; "
            "set temperature=0,do_sample=False through --gen_kwargs"
        )
    return int(gen_kwargs.get("max_new_tokens", 256))


def _cut_at_stops(text: str, until) -> str:
    """lmms-eval's stop strings (``until``), as its own wrappers apply them: the text before the first one."""
    for stop in [until] if isinstance(until, str) else list(until or []):
        if stop:
            text = text.split(stop, 1)[0]
    return text


class ScaleVLM(lmms):
    is_simple = True

    def __init__(self, pretrained: str, device: str = "auto", dtype: str = "auto", batch_size: int | str = 16,
                 trust_remote_code: bool | str = False, progress: bool | str = False, **kwargs) -> None:
        super().__init__()
        unknown = sorted(set(kwargs) - set(_IGNORED_ARGS))
        if unknown:
            raise ValueError(f"--model scale_vlm: unknown --model_args {unknown}; expected pretrained, device, dtype, "
                             "batch_size, trust_remote_code, progress")
        from ..model_loading import load_model, resolve_device
        from ..processors import load_processor
        from ..run_guard import check_local_path

        trust = str(trust_remote_code).lower() in ("1", "true", "yes")
        check_local_path(pretrained, "model")
        self._model = load_model(pretrained, trust_remote_code=trust, dtype=dtype, device=resolve_device(device))
        self.processor = load_processor(pretrained, trust_remote_code=trust)
        self.batch_size_per_gpu = int(batch_size)
        self.progress = str(progress).lower() in ("1", "true", "yes")
        self._rank, self._world_size = 0, 1

    @property
    def model(self):
        return self._model

    def loglikelihood(self, requests):
        raise NotImplementedError("the scale_vlm model only generates (output_type: generate_until)")

    def generate_until(self, requests) -> list[str]:
        """Generate for every request, batched per task and generation budget, answers in request order."""
        groups: dict[tuple, list[int]] = {}
        for index, request in enumerate(requests):
            _, gen_kwargs, _, _, task, _ = request.args
            budget = _greedy_budget(gen_kwargs, task)
            groups.setdefault((task, budget, repr(gen_kwargs.get("until"))), []).append(index)
        results: list[str | None] = [None] * len(requests)
        for (_, budget, _), indices in groups.items():
            examples = []
            for index in indices:
                context, _, doc_to_visual, doc_id, task, split = requests[index].args
                visuals = doc_to_visual(self.task_dict[task][split][doc_id]) or []
                examples.append(EvalExample(id=str(doc_id), images=list(visuals), prompt=context, gold=""))
            outputs = generate_batch(self.model, self.processor, examples, max_new_tokens=budget,
                                     batch_size=self.batch_size_per_gpu, progress=self.progress)
            for index, output in zip(indices, outputs):
                context, gen_kwargs = requests[index].args[:2]
                text = _cut_at_stops(output, gen_kwargs.get("until"))
                results[index] = text
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
        return results

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("the scale_vlm model answers single-turn tasks only")

"""Loading processors and models by name or path, including on machines without torchvision.

Qwen2-VL / Qwen2.5-VL snapshots list a video processor, which in transformers 5 needs torchvision. For image-only
training that is dead weight, so when the video processor cannot be built the processor is assembled from its
tokenizer and (PIL) image processor with ``video_processor=None``.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path

from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer, ProcessorMixin

logger = logging.getLogger(__name__)


@functools.cache
def image_only_processor_class(processor_cls: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """``processor_cls`` that accepts ``video_processor=None`` (saved under the original class name)."""

    class DropEmptyVideo(ProcessorMixin):
        # Processors whose __init__ always forwards video_processor (Gemma-4) would trip ProcessorMixin's check of
        # the attribute list the video slot was dropped from: an empty one is dropped here, before that check.
        def __init__(self, *args, **kwargs):
            if kwargs.get("video_processor", 0) is None:
                kwargs.pop("video_processor")
            super().__init__(*args, **kwargs)

    class ImageOnly(processor_cls, DropEmptyVideo):
        @classmethod
        def get_attributes(cls):
            # Dropping the video slot keeps __init__'s class checks and save_pretrained away from it.
            return [name for name in super().get_attributes() if "video" not in name]

    ImageOnly.__name__ = processor_cls.__name__
    ImageOnly.__qualname__ = processor_cls.__qualname__
    return ImageOnly


def build_image_only_processor(processor_cls: type[ProcessorMixin], image_processor, tokenizer, chat_template=None, **kwargs):
    """Instantiate a processor whose ``video_processor`` slot stays empty."""
    cls = image_only_processor_class(processor_cls)
    return cls(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template, **kwargs)


def load_processor(name_or_path: str, trust_remote_code: bool = False, **kwargs) -> ProcessorMixin:
    """``AutoProcessor.from_pretrained``, falling back to an image-only processor when the video part can't load."""
    try:
        return AutoProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **kwargs)
    except (ImportError, AttributeError, ValueError, TypeError, OSError) as err:
        processor_cls = _declared_processor_class(name_or_path)
        if processor_cls is None or "video_processor" not in processor_cls.get_attributes():
            raise
        logger.debug("video processor unavailable (%s); loading %s for images only", err, processor_cls.__name__)
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **kwargs)
    try:
        image_processor = AutoImageProcessor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **kwargs)
    except ImportError as img_err:  # e.g. LFM2.5-VL: transformers has its image processor for torchvision only
        raise ImportError(f"{name_or_path}: the image processor of {processor_cls.__name__} cannot be built without "
                          f"torchvision ({img_err}); install the torchvision build matching your torch") from img_err
    chat_template = getattr(tokenizer, "chat_template", None)
    extra = {}
    if "feature_extractor" in processor_cls.get_attributes():  # Gemma-4's audio feature extractor (numpy only)
        from transformers import AutoFeatureExtractor

        extra["feature_extractor"] = AutoFeatureExtractor.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **kwargs)
    extra["video_processor"] = None  # processor_cls declares the slot (checked above); ImageOnly drops it empty
    extra.update(_saved_processor_settings(name_or_path, processor_cls))
    return build_image_only_processor(processor_cls, image_processor, tokenizer, chat_template=chat_template, **extra)


def _saved_processor_settings(name_or_path: str, processor_cls) -> dict:
    """The processor's own saved settings (InternVL's ``image_seq_length``...) from processor_config.json: the
    scalar entries its __init__ takes, which the image-only assembly would otherwise reset to their defaults."""
    import inspect

    from transformers.utils import cached_file

    try:
        resolved = cached_file(name_or_path, "processor_config.json", _raise_exceptions_for_missing_entries=False)
    except Exception:  # noqa: BLE001 - nothing saved: the defaults
        return {}
    if not resolved or not Path(resolved).is_file():
        return {}
    accepted = set(inspect.signature(processor_cls.__init__).parameters)
    saved = json.loads(Path(resolved).read_text())
    return {k: v for k, v in saved.items() if k in accepted and not isinstance(v, dict)
            and k not in ("chat_template", "image_processor", "tokenizer", "video_processor", "feature_extractor")}


def _declared_processor_class(name_or_path: str):
    import transformers

    for filename in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        try:
            from transformers.utils import cached_file

            resolved = cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=False)
        except Exception:  # noqa: BLE001 - any lookup failure just means "not declared here"
            resolved = None
        if resolved and Path(resolved).is_file():
            name = json.loads(Path(resolved).read_text()).get("processor_class")
            if name and hasattr(transformers, name):
                return getattr(transformers, name)
    return None

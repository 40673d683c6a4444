"""scale-vlm: balanced chain-of-thought SFT (SCALe) for vision-language models."""

__version__ = "0.1.0"

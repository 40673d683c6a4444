"""``python -m scale_vlm.cli`` (what ``accelerate launch -m scale_vlm.cli sft ...`` runs)."""

from . import main

raise SystemExit(main())

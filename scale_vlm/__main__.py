"""``python -m scale_vlm`` is the ``scale-vlm`` command."""

from .cli import main

raise SystemExit(main())

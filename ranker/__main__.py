"""``python -m ranker`` is the ``rank`` command."""
from __future__ import annotations

from ranker.cli import main

main()

"""``python -m ranker`` is the ``rank`` command."""

from .cli import main

main()

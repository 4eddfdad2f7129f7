"""``python -m jobcarbon``: the same as the ``jobcarbon`` command."""

from .cli import main

main()

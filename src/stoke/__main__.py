"""``python -m stoke``: the same as the ``stoke`` command."""

from stoke.cli import main

main()

"""``python -m istore``: the CLI (how ``serve --workers`` starts its workers)."""

from istore.cli import main

main()

"""One module per top-level ``horodate`` command.

Each module defines ``register(subparsers)``, which adds its parser and sets
``func(args) -> int`` as the parser default. Keep imports of heavy libraries inside the
command functions so ``horodate --help`` stays fast.
"""

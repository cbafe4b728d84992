"""The ``controlcg`` subcommands, one module per family, each adding its own parsers beside their handlers (heavy
imports happen inside the handlers, so ``controlcg --help`` is fast).
"""

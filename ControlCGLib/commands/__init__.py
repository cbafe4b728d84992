"""The ``controlcg`` subcommands, one module per family; each module's ``register(sub)`` adds its parsers with their
flags beside the handler. ``ControlCGLib.cli`` only builds the parser and maps errors to exit codes.

Heavy imports (torch, MONAI) happen inside the handlers, so ``controlcg --help`` is fast.
"""

"""Subcommands of the ``perfgate`` CLI, one module each (see ``perfgate.cli``)."""

"""The command line: the parser and one module per command group."""

from miner.cli.main import entry, main

__all__ = ["entry", "main"]

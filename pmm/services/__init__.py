"""Use cases, one module each: the CLI calls one service per command."""

"""`grouprank` commands that are not one stage (stage commands are generated in `grouprank.cli`).
Each module exposes `register(subparsers)`; nothing in the library imports them."""

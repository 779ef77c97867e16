"""Subcommands of this package for the ``superpos`` console script."""


def register(subparsers) -> None:
    """Add this package's subcommands (imports of Ray/MLflow happen inside their functions)."""

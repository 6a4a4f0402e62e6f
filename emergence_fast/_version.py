"""The package version, in one place: ``pyproject.toml`` reads it, and modules import it from here
(not from the package ``__init__``, which imports them: that would be an import cycle)."""

__version__ = "0.1.0"

"""Typed errors. Every error names the thing (model, chip, field, node) and the
number that did not fit, so the CLI can print it as one line."""

from __future__ import annotations


class GimletError(Exception):
    """Base of every error gimletc raises on purpose; the CLI prints these as one line."""


class ConfigError(GimletError, ValueError):
    """A description file (model, chip, cluster, graph) is malformed: names the file and field."""


class UnknownNameError(GimletError, KeyError):
    """A catalog lookup failed: names what was asked for and what exists."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, sorted(known)
        shown = ", ".join(self.known[:20]) + (" ..." if len(self.known) > 20 else "")
        super().__init__(f"unknown {kind} {name!r}; known: {shown}")

    def __str__(self) -> str:  # KeyError would repr() the message
        return self.args[0]


class UnsupportedArchitectureError(ConfigError):
    """A Hugging Face config names an architecture gimletc does not model."""


class DoesNotFitError(GimletError):
    """A model (or a piece of one) needs more memory than a chip has."""

    def __init__(self, what: str, chip: str, needed_bytes: float, capacity_bytes: float, detail: str = ""):
        self.what, self.chip = what, chip
        self.needed_bytes, self.capacity_bytes = needed_bytes, capacity_bytes
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"{what} needs {needed_bytes / 1e9:.1f} GB{extra}; {chip} has {capacity_bytes / 1e9:.1f} GB"
        )


class EstimateError(GimletError, ValueError):
    """Arguments to an estimate are out of range (names the argument and value)."""

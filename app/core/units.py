"""Byte units. Everything inside ModelDeck is an int number of bytes; GiB exist only at the edge."""

from __future__ import annotations

KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30


def gib(n_bytes: int | float) -> float:
    """Bytes as GiB (2**30), for display and the seed's `*_gb` compatibility fields."""
    return n_bytes / GiB


def bytes_from_gib(value: float) -> int:
    """GiB as a whole number of bytes."""
    return int(round(value * GiB))


def format_gib(n_bytes: int | float | None, digits: int = 1) -> str:
    """A labelled GiB figure for people, e.g. ``'23.6 GiB'``; ``'n/a'`` when unknown."""
    if n_bytes is None:
        return "n/a"
    return f"{n_bytes / GiB:.{digits}f} GiB"

"""Numbers as the report and ``salbench compare`` print them (one module for both)."""

from __future__ import annotations

import math


def fmt(value: float, digits: int = 3) -> str:
    """A number for a table: fixed ``digits`` decimals, scientific when tiny or huge."""
    if value is None or not math.isfinite(float(value)):
        return "–"
    v = float(value)
    if v != 0 and (abs(v) < 10 ** -digits or abs(v) >= 1e5):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}f}"


def sign(direction: str) -> int:
    """A metric direction as a sign: 1 for "higher" is better, -1 for "lower", 0 otherwise
    ("neutral")."""
    return {"higher": 1, "lower": -1}.get(direction, 0)


def arrow(sign: int) -> str:
    """The suffix of a metric's label for its better direction: " (↑)" for higher (sign 1),
    " (↓)" for lower (-1), nothing for neither (0)."""
    return {1: " (↑)", -1: " (↓)", 0: ""}[sign]


def fmt_signed(value: float, digits: int = 3) -> str:
    """:func:`fmt` with a leading ``+`` for non-negative values."""
    text = fmt(value, digits)
    return text if text == "–" or text.startswith("-") else f"+{text}"


def sig(value: float, signed: bool = False) -> str:
    """A number with 4 significant digits (``salbench compare``'s text table); "-" when not
    finite, "0" for zero; ``signed``: a leading ``+`` for positive values."""
    if not math.isfinite(value):
        return "-"
    if value == 0:
        return "0"
    return f"{value:+.4g}" if signed else f"{value:.4g}"

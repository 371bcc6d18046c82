"""Money: integer micro-dollars everywhere, text only at the edges. No float ever touches a balance."""

from __future__ import annotations

from decimal import Decimal

MICROS = 1_000_000  # balances are integer micro-dollars: no float ever touches money


def usd_to_micros(value: str | Decimal | float) -> int:
    return int((Decimal(str(value)) * MICROS).to_integral_value())


def micros_to_usd(micros: int) -> str:
    """``1.234``-style text: at least two decimals, no trailing zeros beyond them."""
    text = f"{Decimal(micros) / MICROS:.6f}".rstrip("0")
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(2, '0')}"

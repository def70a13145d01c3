"""Exact token amounts: integers in base units, scaled by decimals with Decimal, shown without float."""
from __future__ import annotations

from decimal import Decimal, InvalidOperation, localcontext


def scale(amount: int, decimals: int | None) -> Decimal:
    """``amount`` base units as a Decimal of whole tokens (unscaled when decimals are unknown)."""
    with localcontext() as ctx:
        ctx.prec = 100
        return Decimal(amount).scaleb(-(decimals or 0))


def unscale(value: str, decimals: int | None) -> int:
    """A user-typed amount ("1.5") as base units; raises ValueError for anything else or too many decimals."""
    try:
        number = Decimal(value.replace(",", "").replace("_", ""))
    except InvalidOperation:
        raise ValueError(f"not an amount: {value!r}") from None
    if not number.is_finite() or number < 0:
        raise ValueError(f"not an amount: {value!r}")
    with localcontext() as ctx:
        ctx.prec = 100
        units = number.scaleb(decimals or 0)
    if units != units.to_integral_value():
        raise ValueError(f"{value} has more than {decimals or 0} decimals")
    return int(units)


def fmt(amount: int, decimals: int | None, symbol: str | None = None, places: int = 6) -> str:
    """Human text: thousands separators, at most ``places`` decimals (trailing zeros dropped), exact digits."""
    value = scale(amount, decimals)
    with localcontext() as ctx:
        ctx.prec = 100
        quantized = value.quantize(Decimal(1).scaleb(-places)) if decimals else value
    text = f"{quantized:,f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if decimals is None:
        text += " units"
    return f"{text} {symbol}" if symbol else text

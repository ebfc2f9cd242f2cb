"""Figures between 0 and 1 (AUC, AP, rates, thresholds) as reports and tables print them."""

from __future__ import annotations


def fraction_text(value: float, digits: int = 3) -> str:
    """`value` to `digits` places, but never a rounded edge it is not: an AUC of 0.9996 beside a false positive
    read "1.000" (perfect), so such a value reads ">0.999" (and 0.0004, "<0.001")."""
    text = f"{value:.{digits}f}"
    step = 10**-digits
    if value < 1 and text == f"{1:.{digits}f}":
        return f">{1 - step:.{digits}f}"
    if value > 0 and text == f"{0:.{digits}f}":
        return f"<{step:.{digits}f}"
    return text


def auc_text(value: float, low: float | None = None, high: float | None = None) -> str:
    """An AUC and its interval to 2 places, or to 3 where 2 would read a perfect 1.00: 0.9981 [0.9956, 0.9997]
    read "1.00 [1.00, 1.00]", a perfect score without an interval."""
    shown = [figure for figure in (value, low, high) if figure is not None]
    digits = 3 if any(figure < 1 and f"{figure:.2f}" == "1.00" for figure in shown) else 2
    text = fraction_text(value, digits)
    return (
        text if low is None or high is None else f"{text} [{fraction_text(low, digits)}, {fraction_text(high, digits)}]"
    )

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

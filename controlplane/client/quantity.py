"""Kubernetes' ``resource.Quantity``: "100m", "1Gi", "2", "1e3", or a JSON number, read as an
exact number. Shared by the API (validation), the scheduler (requests) and the node agent
(limits), so there is one reading of a quantity everywhere."""

from __future__ import annotations

import re
from fractions import Fraction

QUANTITY_FORMAT = "^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
QUANTITY_ERROR = f"quantities must match the regular expression '{QUANTITY_FORMAT}'"
_SUFFIXES: dict[str, Fraction] = {
    "": Fraction(1), "n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000),
    "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
    "P": Fraction(10**15), "E": Fraction(10**18),
    "Ki": Fraction(2**10), "Mi": Fraction(2**20), "Gi": Fraction(2**30), "Ti": Fraction(2**40),
    "Pi": Fraction(2**50), "Ei": Fraction(2**60),
}


def parse_quantity(value: str | int | float) -> Fraction:
    """A Kubernetes ``resource.Quantity`` ("100m", "1Gi", "2", "1e3", or a JSON number) as an
    exact number; ValueError with Kubernetes' message when it is not one."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(QUANTITY_ERROR)
    if isinstance(value, (int, float)):
        return Fraction(str(value))
    match = re.fullmatch(QUANTITY_FORMAT[1:-1], value.strip())
    if match is None:
        raise ValueError(QUANTITY_ERROR)
    number, suffix = match.groups()
    if number.count(".") > 1 or number.strip("+-") in ("", "."):
        raise ValueError(QUANTITY_ERROR)
    if suffix in _SUFFIXES:
        scale = _SUFFIXES[suffix]
    elif re.fullmatch("[eE][-+]?[0-9]+", suffix):
        scale = Fraction(10) ** int(suffix[1:])
    else:
        raise ValueError(QUANTITY_ERROR)
    return Fraction(number) * scale

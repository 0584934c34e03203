"""Every argument check in tfsmooth: one contract, one message shape.

Each check returns the value in a plain Python type and raises naming the argument and the value
received, ``"`beta` must be > 0. Received: beta=-1"``:

- ``TypeError`` when the value is not of an accepted kind at all (a string for a number, a float
  for an integer, a number for a flag);
- ``ValueError`` when it is of the right kind but not allowed (out of range, NaN, infinite, not
  representable in the dtype it is computed in, not one of the choices).

numpy scalars are accepted wherever the Python type is: ``np.int64(2)`` is an integer,
``np.float32(0.5)`` a number and ``np.True_`` a flag. A bool is never a number.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "FLOAT32_MAX",
    "FLOAT32_TINY",
    "check_bool",
    "check_choice",
    "check_float",
    "check_int",
    "check_seed",
    "is_bool",
    "is_integer",
    "is_number",
]

#: The largest finite float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)
#: The smallest normal positive float32: below it a value loses precision, and its reciprocal
#: overflows.
FLOAT32_TINY = float(np.finfo(np.float32).tiny)


def is_bool(value: Any) -> bool:
    """``True``/``False`` or a numpy bool."""
    return isinstance(value, (bool, np.bool_))


def is_integer(value: Any) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(value, (numbers.Integral, np.integer)) and not is_bool(value)


def is_number(value: Any) -> bool:
    """A Python or numpy real number (integers included), not a bool."""
    return isinstance(value, (numbers.Real, np.integer, np.floating)) and not is_bool(value)


def _range_text(minimum, maximum, min_inclusive, max_inclusive) -> str:
    parts = []
    if minimum is not None:
        parts.append(f"{'>=' if min_inclusive else '>'} {minimum:g}")
    if maximum is not None:
        parts.append(f"{'<=' if max_inclusive else '<'} {maximum:g}")
    return " and ".join(parts)


def check_int(
    name: str,
    value: Any,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    allow_none: bool = False,
) -> int | None:
    """Returns ``value`` as an ``int`` in ``[minimum, maximum]``.

    Raises:
        TypeError: not an integer (a float, a bool, a string), or ``None`` when not allowed.
        ValueError: out of range.
    """
    if value is None and allow_none:
        return None
    if not is_integer(value):
        none = " or None" if allow_none else ""
        raise TypeError(f"`{name}` must be an integer{none}. Received: {name}={value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = _range_text(minimum, maximum, True, True)
        raise ValueError(f"`{name}` must be an integer {bounds}. Received: {name}={value!r}")
    return int(value)


def check_float(
    name: str,
    value: Any,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
    allow_none: bool = False,
    float32: bool = False,
) -> float | None:
    """Returns ``value`` as a finite ``float`` in the given range.

    Args:
        name: the argument's name, for the message.
        value: what was passed.
        minimum, maximum: the range (``None``: unbounded on that side).
        min_inclusive, max_inclusive: whether the ends are allowed.
        allow_none: ``None`` passes through.
        float32: the value is computed in float32: it must be representable there, finite and,
            unless it is 0, of at least the smallest normal float32 in magnitude (a subnormal
            width has an infinite reciprocal).

    Raises:
        TypeError: not a real number (a bool, a string), or ``None`` when not allowed.
        ValueError: NaN, infinite, out of range or not representable in float32.
    """
    if value is None and allow_none:
        return None
    if not is_number(value):
        none = " or None" if allow_none else ""
        raise TypeError(f"`{name}` must be a number{none}. Received: {name}={value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"`{name}` must be a finite number. Received: {name}={value!r}")
    low_bad = minimum is not None and (
        number < minimum or (not min_inclusive and number == minimum)
    )
    high_bad = maximum is not None and (
        number > maximum or (not max_inclusive and number == maximum)
    )
    if low_bad or high_bad:
        bounds = _range_text(minimum, maximum, min_inclusive, max_inclusive)
        raise ValueError(f"`{name}` must be {bounds}. Received: {name}={value!r}")
    if float32 and (abs(number) > FLOAT32_MAX or 0 < abs(number) < FLOAT32_TINY):
        raise ValueError(
            f"`{name}` must be representable in float32 (a magnitude between "
            f"{FLOAT32_TINY:.3g} and {FLOAT32_MAX:.3g}, or 0). Received: {name}={value!r}"
        )
    return number


def check_bool(name: str, value: Any) -> bool:
    """Returns ``value`` as a ``bool`` (``True``/``False`` or a numpy bool).

    Raises:
        TypeError: anything else, 0 and 1 included.
    """
    if not is_bool(value):
        raise TypeError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return bool(value)


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Returns ``value`` if it is one of ``choices``.

    Raises:
        ValueError: not one of them.
    """
    choices = list(choices)
    if not any(
        value is choice or (type(value) is type(choice) and value == choice) for choice in choices
    ):
        raise ValueError(f"`{name}` must be one of {choices}. Received: {name}={value!r}")
    return value


def check_seed(name: str, value: Any, *, allow_none: bool = True) -> int | None:
    """Returns ``value`` as an ``int`` seed in ``[0, 2**63 - 1]`` (or ``None``).

    Raises:
        TypeError: not an integer.
        ValueError: negative or too large.
    """
    return check_int(name, value, 0, 2**63 - 1, allow_none=allow_none)

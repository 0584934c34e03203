"""Argument checks shared across tfsmooth: each raises naming the argument and the value received."""

from __future__ import annotations

import numbers
from typing import Any


def check_int(name: str, value: Any, minimum: int) -> int:
    """Returns ``value`` as an ``int >= minimum`` (Python or numpy integer; not a bool).

    Raises:
        ValueError: ``"`name` must be an integer >= minimum. Received: name=value"``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}. Received: {name}={value!r}")
    return int(value)


def check_bool(name: str, value: Any) -> bool:
    """Returns ``value`` if it is ``True`` or ``False``.

    Raises:
        TypeError: ``"`name` must be True or False. Received: name=value"``.
    """
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return value

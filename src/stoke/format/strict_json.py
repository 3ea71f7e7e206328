"""Strict JSON for everything stoke reads from a dataset: no NaN, no Infinity, nothing but data.

Python's parser accepts ``NaN`` and ``Infinity``, which are not JSON; stoke writes neither, so a reader
that meets one is looking at a file stoke did not write, and refuses it.

Example:
    >>> loads('{"a": [1, 2.5, null]}')
    {'a': [1, 2.5, None]}
    >>> loads('[NaN]')
    Traceback (most recent call last):
    ...
    ValueError: NaN is not JSON
"""

from __future__ import annotations

import json
from typing import Any


def _refuse(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def loads(text: str | bytes) -> Any:
    """Parse strict JSON; raises ValueError (``json.JSONDecodeError`` included) for anything else.

    Nesting deeper than Python's recursion limit is refused the same way: it is a file stoke did not
    write, not a bug to report.
    """
    try:
        return json.loads(text, parse_constant=_refuse)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None

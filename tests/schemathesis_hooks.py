"""Schemathesis hooks for tests/test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

A thread id names its two users sorted bytewise, which no regex can say: a generated
``dm:<a>:<b>`` is put in that order, so a request the document calls valid is one.
"""

from __future__ import annotations

import re
from typing import Any

import schemathesis

# path parameters come percent-encoded (`dm%3Aa%3Ab`), query values plain
_THREAD = re.compile(r"dm(:|%3A)([A-Za-z0-9_.-]{1,64})(:|%3A)([A-Za-z0-9_.-]{1,64})")


def canonical(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    return _THREAD.sub(_sorted, value)


def _sorted(match: re.Match[str]) -> str:
    colon, a, colon2, b = match.groups()
    low, high = sorted((a, b), key=str.encode)
    return f"dm{colon}{low}{colon2}{high}"


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Every phase (examples, coverage, fuzzing) passes here before its request."""
    for values in (case.path_parameters, case.query):
        if isinstance(values, dict):
            for name, value in values.items():
                values[name] = canonical(value)

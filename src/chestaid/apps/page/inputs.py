"""Inputs as a clinician means them, and text from a file shown as text.

`clinical_inputs` turns the page's or the API's age/sex/view into what the model is given (None = unknown),
refusing with one line what is not an age, a sex or a view. `plain` makes any string from a file (a name, a
tag value, a reason) one short line of text; the page shows it only in text components, never as markup."""

from __future__ import annotations

import math
import re
import unicodedata

from chestaid.core.errors import ChestaidError

MAX_TEXT = 200
SEXES = ("M", "F")
VIEWS = ("PA", "AP")
_UNKNOWN = ("", "unknown", "none")


def plain(value: object, limit: int = MAX_TEXT) -> str:
    """One line of at most `limit` characters: control and format characters removed, whitespace collapsed."""
    text = "".join(" " if unicodedata.category(c)[0] in "CZ" and c != " " else c for c in str(value))
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _age(value: object) -> float | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in _UNKNOWN):
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ChestaidError(f"age must be a number of years or empty (unknown), got {plain(repr(value), 40)}")
    try:
        age = float(value.strip()) if isinstance(value, str) else float(value)
    except ValueError as exc:
        raise ChestaidError(f"age must be a number of years or empty (unknown), got {plain(repr(value), 40)}") \
            from exc
    if not math.isfinite(age) or not 0 <= age <= 120:
        raise ChestaidError(f"age must be between 0 and 120 years, got {plain(repr(value), 40)}")
    return age


def _choice(name: str, value: object, allowed: tuple[str, ...]) -> str | None:
    if value is None or (isinstance(value, str) and value.strip().lower() in _UNKNOWN):
        return None
    if isinstance(value, str) and value.strip().upper() in allowed:
        return value.strip().upper()
    raise ChestaidError(f"{name} must be one of unknown, {', '.join(allowed)}; got {plain(repr(value), 40)}")


def clinical_inputs(age: object, sex: object, view: object) -> dict[str, float | str | None]:
    """{"age", "sex", "view"} with None for unknown; a ChestaidError (one line) for anything else."""
    return {"age": _age(age), "sex": _choice("sex", sex, SEXES), "view": _choice("view", view, VIEWS)}

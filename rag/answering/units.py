"""Units of measurement after a number, by dimension: "45 years old" is not "45 pounds", though both say 45; and
what a question asks for: "How old ...?" wants a time, "Roughly how many glaciers ...?" a count, not a percent.

Only units whose dimension is unambiguous are known; anything else after a number ("45 patients", "1917 treaty")
has no dimension and is never compared. Pound is mass here (the currency is written with "£" in the sources we
read; "£45" has no unit after the number and is not compared).
"""

from __future__ import annotations

import re

from rag.answering.generation.sentences import stem

_DIMENSIONS = {
    "length": "metre meter m km kilometre kilometer cm centimetre centimeter mm millimetre millimeter micrometre "
    "micrometer nanometre nanometer mile mi foot feet ft inch yard",
    "mass": "kilogram kg gram g milligram mg pound lb lbs ton tonne ounce oz",
    "time": "second minute hour day week month year yr decade century millennium",
    "area": "acre hectare ha",
    "volume": "litre liter gallon barrel",
    "energy": "kiloton megaton joule calorie",
    "percent": "% percent",
}
UNIT_DIMENSION = {stem(w.lower()): dim for dim, words in _DIMENSIONS.items() for w in words.split()}
_SCALE = r"(?:hundred|thousand|million|billion)\s+"
_AFTER = re.compile(rf"^(?:\s*-\s*|\s*)(?:{_SCALE})?(%|°\s?[CF]\b|square\b|cubic\b|per\s+cent\b|[A-Za-z]+)", re.I)


def dimension_after(text: str) -> str | None:
    """The dimension of the unit that ``text`` (what follows a number) opens with, if it is a known unit."""
    match = _AFTER.match(text)
    if not match:
        return None
    word = match.group(1).lower()
    if word.startswith("°"):
        return "temperature"
    if word == "square":
        return "area"
    if word == "cubic":
        return "volume"
    if word.startswith("per"):
        return "percent"
    return UNIT_DIMENSION.get(stem(word)) or UNIT_DIMENSION.get(word)


# What a question's wording asks for; None in the set: a count (no unit), "how many glaciers"
_ASKED: tuple[tuple[re.Pattern[str], frozenset[str | None]], ...] = (
    (re.compile(r"\bhow old\b", re.I), frozenset({"time"})),
    (re.compile(r"\bhow (?:tall|high|far|deep|wide)\b", re.I), frozenset({"length"})),
    (re.compile(r"\bhow long\b", re.I), frozenset({"length", "time"})),
    (re.compile(r"\b(?:how heavy|weigh)", re.I), frozenset({"mass"})),
    (re.compile(r"\bwhat (?:percentage|proportion|share|fraction)\b", re.I), frozenset({"percent"})),
)
_HOW_MANY = re.compile(r"\bhow many\b", re.I)


def asked_dimensions(question: str) -> frozenset[str | None] | None:
    """The dimensions a question's wording asks for, None when it does not say ("how many tonnes": mass; "how many
    ships": a count, i.e. a number with no unit)."""
    for pattern, dimensions in _ASKED:
        if pattern.search(question):
            return dimensions
    match = _HOW_MANY.search(question)
    if match:
        return frozenset({dimension_after(question[match.end() :])})
    return None

"""Units of measurement after a number, by dimension: "45 years old" is not "45 pounds", though both say 45.

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

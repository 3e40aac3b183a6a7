"""The configuration table in README.md, generated from the Settings model so the docs cannot drift.

    python scripts/settings_table.py          # print the table
    python scripts/settings_table.py --write  # replace it in README.md
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from rag.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- settings:start -->", "<!-- settings:end -->"


def table() -> str:
    lines = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        shown = default if isinstance(default, str) else json.dumps(default, default=str)
        lines.append(f"| `RAG_{name.upper()}` | `{shown}` | {field.description or ''} |")
    return "\n".join(lines)


def readme_with_table(text: str) -> str:
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.DOTALL)
    return pattern.sub(lambda _: f"{START}\n{table()}\n{END}", text)


if __name__ == "__main__":
    if "--write" in sys.argv:
        README.write_text(readme_with_table(README.read_text()))
    else:
        print(table())

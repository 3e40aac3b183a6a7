"""The README's configuration table is the one generated from Settings."""

from __future__ import annotations

import importlib.util

from tests.conftest import REPO_ROOT


def test_readme_configuration_table_matches_settings() -> None:
    spec = importlib.util.spec_from_file_location("settings_table", REPO_ROOT / "scripts" / "settings_table.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    readme = (REPO_ROOT / "README.md").read_text()
    assert module.readme_with_table(readme) == readme, "run: python scripts/settings_table.py --write"

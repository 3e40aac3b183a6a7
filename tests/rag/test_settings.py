"""Configuration errors end the real ``rag`` console script (and the server) with one line and exit status 2."""

from __future__ import annotations

import os
import subprocess
import typing
from pathlib import Path

import pytest
from pydantic_settings import NoDecode

from rag.settings import Settings
from tests.conftest import VENV_BIN

RAG = str(VENV_BIN / "rag")


def _run(args: list[str], tmp_path: Path, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    return subprocess.run(
        args,
        cwd=tmp_path,
        env={**clean, "RAG_DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.mark.parametrize("command", [["status"], ["ask", "what is a volcano?"], ["ingest", "."]])
def test_malformed_integer_env_var_is_one_line_naming_it(tmp_path: Path, command: list[str]) -> None:
    line = _one_error_line(_run([RAG, *command], tmp_path, RAG_TOP_K="abc"))
    assert "RAG_TOP_K='abc'" in line
    assert "valid integer" in line
    assert "e.g. RAG_TOP_K=4" in line  # the expected form with an example
    assert "<= 20" in line


def test_out_of_range_env_var_names_the_range(tmp_path: Path) -> None:
    line = _one_error_line(_run([RAG, "status"], tmp_path, RAG_CHUNK_SIZE="10"))
    assert "RAG_CHUNK_SIZE='10'" in line
    assert ">= 50" in line


def test_bad_choice_lists_the_choices(tmp_path: Path) -> None:
    line = _one_error_line(_run([RAG, "status"], tmp_path, RAG_GENERATOR="gpt"))
    assert "RAG_GENERATOR='gpt'" in line
    assert "one of local, openai, extractive" in line


def test_malformed_list_env_var_is_one_line_and_hides_the_secret(tmp_path: Path) -> None:
    line = _one_error_line(_run([RAG, "status"], tmp_path, RAG_API_KEYS='["secret-key-1", oops'))
    assert "RAG_API_KEYS" in line
    assert "JSON list" in line
    assert "e.g. RAG_API_KEYS=k1,k2" in line
    assert "secret-key-1" not in line


def test_missing_config_file(tmp_path: Path) -> None:
    line = _one_error_line(_run([RAG, "status"], tmp_path, RAG_CONFIG_FILE=str(tmp_path / "nope.toml")))
    assert "RAG_CONFIG_FILE=" in line and "does not exist" in line
    assert "top_k = 4" in line


def test_malformed_config_file(tmp_path: Path) -> None:
    config = tmp_path / "rag.toml"
    config.write_text("top_k = \n", encoding="utf-8")
    line = _one_error_line(_run([RAG, "status"], tmp_path, RAG_CONFIG_FILE=str(config)))
    assert f"RAG_CONFIG_FILE={config} is not valid TOML" in line
    assert "line 1" in line


def test_bad_values_in_config_file_name_the_key_and_the_file(tmp_path: Path) -> None:
    config = tmp_path / "rag.toml"
    config.write_text("top_k = 99\nno_such_setting = 1\n", encoding="utf-8")
    line = _one_error_line(_run([RAG, "status"], tmp_path, RAG_CONFIG_FILE=str(config)))
    assert f"top_k = 99 in RAG_CONFIG_FILE={config}" in line
    assert "e.g. top_k = 4" in line
    assert "unknown setting 'no_such_setting'" in line


def test_inconsistent_settings_name_both_variables(tmp_path: Path) -> None:
    line = _one_error_line(_run([RAG, "status"], tmp_path, RAG_CHUNK_SIZE="100", RAG_CHUNK_OVERLAP="200"))
    assert "RAG_CHUNK_SIZE" in line and "RAG_CHUNK_OVERLAP" in line
    assert "must be smaller" in line


def test_bad_command_line_option_is_named_as_an_option(tmp_path: Path) -> None:
    line = _one_error_line(_run([RAG, "ask", "--mode", "sideways", "q"], tmp_path))
    assert "command-line option for retrieval_mode" in line
    assert "one of dense, bm25, hybrid" in line


def test_serve_fails_with_one_line(tmp_path: Path) -> None:
    line = _one_error_line(_run([RAG, "serve", "--port", "1"], tmp_path, RAG_MAX_BODY_BYTES="big"))
    assert "RAG_MAX_BODY_BYTES='big'" in line


def test_uvicorn_factory_fails_with_one_line(tmp_path: Path) -> None:
    args = [str(VENV_BIN / "uvicorn"), "--factory", "api.app:app_from_env", "--port", "1"]
    repo = Path(__file__).resolve().parents[2]
    result = _run(args, tmp_path, RAG_RATE_LIMIT_PER_MINUTE="0", PYTHONPATH=str(repo))
    line = _one_error_line(result)
    assert "RAG_RATE_LIMIT_PER_MINUTE='0'" in line and ">= 1" in line


def test_list_settings_accept_comma_separated_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_API_KEYS", "k1, k2")
    monkeypatch.setenv("RAG_INGEST_ROOTS", "/srv/a,/srv/b")
    settings = Settings()
    assert [key.get_secret_value() for key in settings.api_keys] == ["k1", "k2"]
    assert settings.ingest_roots == [Path("/srv/a"), Path("/srv/b")]


def test_list_settings_still_accept_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_API_KEYS", '["k,1", "k2"]')  # JSON keeps a comma inside a key
    assert [key.get_secret_value() for key in Settings().api_keys] == ["k,1", "k2"]
    monkeypatch.setenv("RAG_API_KEYS", "")
    assert Settings().api_keys == []


def test_list_settings_from_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "rag.toml"
    config.write_text('api_keys = "a,b,c"\ningest_roots = ["/x"]\n', encoding="utf-8")
    monkeypatch.setenv("RAG_CONFIG_FILE", str(config))
    settings = Settings()
    assert len(settings.api_keys) == 3
    assert settings.ingest_roots == [Path("/x")]


def test_every_list_setting_accepts_comma_separated_text() -> None:
    """A new list field must be ``NoDecode`` (and split by the validator), or ``RAG_X=a,b`` would be a JSON error."""
    for name, field in Settings.model_fields.items():
        if typing.get_origin(field.annotation) is list:
            assert any(meta is NoDecode or isinstance(meta, NoDecode) for meta in field.metadata), name
            assert Settings(**{name: "a,b"}).model_dump()[name] not in ([], None), name

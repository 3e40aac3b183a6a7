"""Command-line foundations shared by every ``rag`` command and the server entry points.

A foundation module (like ``settings`` and ``errors``): the CLI helpers live here, not in ``rag.cli``, so job
packages and ``rag.ml`` can use them without importing the command tree. A configuration error ends the process
with ONE line naming the variable, what was wrong and the expected form with an example, and exit status 2.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import annotated_types
from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import SettingsError

from rag.errors import ConfigError, RagError
from rag.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

CONFIG_EXIT = 2
# Top-level modules of the optional ``ragkit[eval]`` extra: a command that needs one says how to install it.
EVAL_EXTRA_MODULES = frozenset(
    {"mlflow", "ragas", "langchain_community", "rapidfuzz", "sacrebleu", "rouge_score", "matplotlib"}
)
# Example values for settings whose default is empty (None or []), keyed by the type shown to the user.
_EXAMPLES = {"path": "/srv/ragkit/docs", "list": "k1,k2", "url": "http://127.0.0.1:8001", "text": "value"}


def fail(message: str, code: int = CONFIG_EXIT) -> NoReturn:
    """Print ``error: MESSAGE`` on one stderr line and exit; works inside a command and outside (server factory)."""
    one_line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    print(f"error: {one_line}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def load_settings(**overrides: Any) -> Settings:
    """Settings from env/config file with CLI overrides; any configuration error ends the process with one line."""
    try:
        settings = Settings()
    except (ValidationError, SettingsError, ConfigError) as exc:
        fail(describe_settings_error(exc))
    try:
        return settings.with_overrides(**overrides)
    except ValidationError as exc:
        fail(describe_settings_error(exc, overrides))


def handles_errors(func: F) -> F:
    """Turn the project's exceptions into a one-line message and exit status 2, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RagError as exc:
            fail(f"{exc} [{exc.code}]")
        except KeyboardInterrupt:
            fail("interrupted; the store is consistent and the next run resumes", 130)
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").split(".")[0]
            if missing not in EVAL_EXTRA_MODULES:
                raise
            fail(f"this command needs the optional package {missing!r}: pip install 'ragkit[eval]'")

    return typing.cast(F, wrapper)


def emit_json(payload: Any) -> None:
    print(json.dumps(payload, indent=2, default=str), flush=True)


# ------------------------------------------------------------------------------------- error messages


def describe_settings_error(exc: Exception, overrides: dict[str, Any] | None = None) -> str:
    """One line for a settings failure: which variable, what was wrong, the expected form and an example."""
    if isinstance(exc, ValidationError):
        return "; ".join(_describe_one(err, overrides or {}) for err in exc.errors())
    if isinstance(exc, SettingsError):
        match = re.search(r'field "(\w+)"', str(exc))
        name = match.group(1) if match else ""
        field = Settings.model_fields.get(name)
        if field is None:
            return f"invalid configuration: {exc}"
        return f"RAG_{name.upper()} could not be parsed; expected {_expected(name, field)}"
    return str(exc)


def _describe_one(err: Any, overrides: dict[str, Any]) -> str:
    loc = [str(part) for part in err.get("loc", ())]
    name = loc[0] if loc else ""
    field = Settings.model_fields.get(name)
    message = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    if field is None and err.get("type") == "extra_forbidden":
        return (
            f"unknown setting {name!r} in {_config_file_label()}; expected a setting name without the RAG_ prefix "
            "(README, Configuration), e.g. top_k = 4"
        )
    if field is None:  # a rule across fields (model validator): name the variables the message mentions
        named = [f for f in Settings.model_fields if re.search(rf"\b{f}\b", message)]
        example = " ".join(f"RAG_{f.upper()}={Settings.model_fields[f].default}" for f in named)
        variables = ", ".join(f"RAG_{f.upper()}" for f in named) or "settings"
        return f"invalid configuration ({variables}): {message}" + (f"; e.g. {example}" if example else "")
    shown = "" if _is_secret(field) else _short(err.get("input"))
    where = f"[{loc[1]}]" if len(loc) > 1 else ""
    origin = _origin(name, overrides)
    if origin == "file":
        value = f"{name}{where} = {shown}" if shown else f"{name}{where}"
        return f"{value} in {_config_file_label()}: {message}; expected {_expected(name, field, toml=True)}"
    label = f"command-line option for {name} (RAG_{name.upper()})" if origin == "option" else f"RAG_{name.upper()}"
    value = f"{label}{where}={shown}" if shown else f"{label}{where}"
    return f"{value}: {message}; expected {_expected(name, field)}"


def _origin(name: str, overrides: dict[str, Any]) -> str:
    """Where a value came from: ``option`` (command line), ``env`` or ``file`` (the TOML config file)."""
    if overrides.get(name) is not None:
        return "option"
    env_name = f"RAG_{name.upper()}"
    if any(key.upper() == env_name for key in os.environ):
        return "env"
    config_file = os.environ.get("RAG_CONFIG_FILE")
    if config_file and name in _config_keys(config_file):
        return "file"
    return "env"


def _config_file_label() -> str:
    return f"RAG_CONFIG_FILE={os.environ.get('RAG_CONFIG_FILE', '')}"


def _config_keys(config_file: str) -> set[str]:
    try:
        import tomllib

        return set(tomllib.loads(Path(config_file).read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return set()


def _expected(name: str, field: FieldInfo, *, toml: bool = False) -> str:
    """The expected form of a field, with an example value taken from its default where it has one."""
    kind, form = _form(field.annotation)
    bounds = [
        f"{symbol} {getattr(meta, attr)}"
        for meta in field.metadata
        for attr, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
        if isinstance(meta, annotated_types.BaseMetadata) and getattr(meta, attr, None) is not None
    ]
    if bounds:
        form += f" {' and '.join(bounds)}"
    example = _example(name, field, kind)
    if toml:
        value: Any = example.split(",") if kind == "list" else example
        shown = example if kind in {"bool", "int", "float"} else json.dumps(value)
        return f"{form}, e.g. {name} = {shown}"
    return f"{form}, e.g. RAG_{name.upper()}={example}"


def _form(annotation: Any) -> tuple[str, str]:
    """(kind, words) for a field's type: the kinds pick an example, the words describe the form."""
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "choice", "one of " + ", ".join(str(arg) for arg in args)
    if origin is list:
        return "list", "comma-separated values or a JSON list"
    if origin is typing.Annotated:
        return _form(args[0])
    if args and origin is not None:  # X | None
        return _form(args[0])
    table = {bool: ("bool", "true or false"), int: ("int", "an integer"), float: ("float", "a number")}
    if annotation in table:
        return table[annotation]
    if annotation is Path:
        return "path", "a path"
    if annotation is SecretStr:
        return "text", "a secret string"
    return "text", "text"


def _example(name: str, field: FieldInfo, kind: str) -> str:
    default = None if field.default_factory is not None else field.default
    if default not in (None, "") and not _is_secret(field):
        return str(default).lower() if isinstance(default, bool) else str(default)
    if kind == "text" and name.endswith("_url"):
        return _EXAMPLES["url"]
    return _EXAMPLES.get(kind, _EXAMPLES["text"])


def _is_secret(field: FieldInfo) -> bool:
    return "SecretStr" in repr(field.annotation)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "...'"

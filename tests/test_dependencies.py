"""The core install serves, ingests and answers without the ``[eval]`` extra; every pin agrees with constraints.txt."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
EVAL_ONLY_MODULES = ["mlflow", "ragas", "langchain_community", "rapidfuzz", "sacrebleu", "rouge_score", "matplotlib"]

# Makes every module of the [eval] extra unimportable, as in a core-only install.
BLOCKER = """
import sys
BLOCKED = set(sys.argv[1].split(","))
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
"""


def _name(requirement: str) -> str:
    return re.split(r"[=<>\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pins() -> dict[str, str]:
    lines = (REPO / "constraints.txt").read_text(encoding="utf-8").splitlines()
    return {_name(line): line.split("==", 1)[1] for line in lines if "==" in line}


def test_core_code_paths_import_nothing_from_the_eval_extra() -> None:
    code = BLOCKER + (
        "import api.app, ingest.pipeline, rag.answering.pipeline, rag.indexing.status\n"
        "from typer.testing import CliRunner\n"
        "from rag.cli import app\n"
        "result = CliRunner().invoke(app, ['--help'])\n"
        "assert result.exit_code == 0, result.output\n"
        "for command in ('ingest', 'ask', 'status', 'serve', 'eval', 'train', 'drift'):\n"
        "    assert command in result.output, command\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    done = subprocess.run(
        [sys.executable, "-c", code, ",".join(EVAL_ONLY_MODULES)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


def test_eval_libraries_are_an_extra_not_core() -> None:
    core = {_name(r) for r in PYPROJECT["project"]["dependencies"]}
    extras = PYPROJECT["project"]["optional-dependencies"]
    eval_extra = {_name(r) for r in extras["eval"]}
    assert {"mlflow", "ragas", "langchain-community", "rapidfuzz", "sacrebleu", "rouge-score"} <= eval_extra
    assert not core & eval_extra
    assert "ragkit[eval]" in extras["dev"]
    assert "kubernetes" not in core  # no code imports it; constraints.txt keeps its resolver pin for chromadb
    assert "kubernetes" in _pins()


def test_every_direct_dependency_is_pinned_exactly_and_agrees_with_constraints() -> None:
    pins = _pins()
    extras = PYPROJECT["project"]["optional-dependencies"]
    requirements = PYPROJECT["project"]["dependencies"] + extras["eval"] + extras["dev"]
    for requirement in requirements:
        if requirement.startswith("ragkit["):
            continue
        name, _, version = requirement.partition("==")
        assert version, f"{requirement} is not pinned exactly"
        if _name(name) == "torch":  # installed first, alone, by scripts/setup.sh (the CPU build)
            continue
        assert pins.get(_name(name)) == version, f"{requirement}: constraints.txt has {pins.get(_name(name))}"


def test_a_command_that_needs_the_eval_extra_says_how_to_install_it(tmp_path: Path) -> None:
    code = BLOCKER + (
        "from typer.testing import CliRunner\n"
        "from rag.cli import app\n"
        "result = CliRunner().invoke(app, ['promote-model', 'some-model'])\n"
        "print(result.exit_code)\n"
        "print(result.output)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    done = subprocess.run(
        [sys.executable, "-c", code, ",".join(EVAL_ONLY_MODULES)],
        cwd=REPO,
        env={**env, "RAG_DATA_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    exit_code, _, output = done.stdout.partition("\n")
    assert exit_code == "2", done.stdout + done.stderr[-2000:]
    assert "needs the optional package 'mlflow': pip install 'ragkit[eval]'" in output
    assert "Traceback" not in output

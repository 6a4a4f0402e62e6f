"""Packaging: what `pip install .` gives a user, and every import declared where it is used.

The rest of the suite runs on an editable install with every extra present, so it cannot see a
module missing from the wheel or an undeclared dependency; these tests can.
"""
from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import shutil
import site
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from emergence_fast._optional import OPTIONAL, MissingDependency, require

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
CORE = {"torch", "numpy", "scipy", "tqdm"}  # the top-level modules of the core dependencies
SOURCES = sorted((ROOT / "emergence_fast").rglob("*.py")) + sorted((ROOT / "kernels").rglob("*.py"))


def _requirement_name(requirement: str) -> str:
    for stop in "<>=!~[; ":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower()


def test_core_and_extras_in_pyproject_match_the_optional_table():
    assert {_requirement_name(r) for r in PYPROJECT["dependencies"]} == CORE
    extras = {name: {_requirement_name(r) for r in reqs} for name, reqs in PYPROJECT["optional-dependencies"].items()}
    for module, (dist, extra) in OPTIONAL.items():
        assert dist in extras[extra], f"{module}: {dist} is not in the [{extra}] extra"
    listed = set().union(*(extras[e] for e in ("models", "plots", "distributed", "text", "dataframe", "triton")))
    assert listed == {dist for dist, _ in OPTIONAL.values()}, "an extra lists a package _optional.py does not know"


def _parents(tree):
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    return parents


def _guarded(node, parents, top: str) -> bool:
    """Inside ``try: ... except ImportError``, or after ``require("<top>...")`` in the same scope."""
    scope, ancestor = None, node
    while ancestor in parents:
        ancestor = parents[ancestor]
        if isinstance(ancestor, ast.Try) and any(
                h.type is None or any(isinstance(n, ast.Name) and n.id in {"ImportError", "ModuleNotFoundError",
                                                                          "Exception"} for n in ast.walk(h.type))
                for h in ancestor.handlers):
            return True
        if scope is None and isinstance(ancestor, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Module)):
            scope = ancestor
    return any(isinstance(call, ast.Call) and getattr(call.func, "id", None) == "require" and call.args
               and isinstance(call.args[0], ast.Constant) and str(call.args[0].value).partition(".")[0] == top
               and call.lineno < node.lineno for call in ast.walk(scope))


def test_every_third_party_import_is_core_or_an_optional_import_through_require():
    problems = []
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        parents = _parents(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.partition(".")[0]
                if top in sys.stdlib_module_names or top in CORE or top == "emergence_fast":
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno} imports {name}"
                if top not in OPTIONAL:
                    problems.append(f"{where}: neither a core dependency nor in _optional.OPTIONAL")
                elif path.parent.name == "kernels" and top == "triton":
                    continue  # kernels/ is only imported inside _dispatch's guarded Triton import
                elif not _guarded(node, parents, top):
                    problems.append(f"{where}: not through require() nor under except ImportError")
    assert not problems, "\n".join(problems)


def test_require_names_the_extra_and_lets_other_import_errors_through(monkeypatch):
    for name in ("matplotlib", "matplotlib.pyplot"):  # importing either now fails as if not installed
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(MissingDependency, match=r"^writing PNGs needs matplotlib, which is not installed: "
                                                r"pip install 'emergence_fast\[plots\]'$"):
        require("matplotlib.pyplot", "writing PNGs")
    with pytest.raises(ValueError, match="not an optional dependency"):
        require("numpy", "anything")


_BLOCKED_IMPORTS = """
import importlib, json, pkgutil, sys
for name in {optional!r}:
    sys.modules[name] = None  # as if not installed
import emergence_fast
from emergence_fast._optional import MissingDependency
outcome = {{}}
for info in pkgutil.walk_packages(emergence_fast.__path__, "emergence_fast."):
    try:
        importlib.import_module(info.name)
        outcome[info.name] = "ok"
    except MissingDependency as exc:
        outcome[info.name] = str(exc)
print(json.dumps(outcome))
"""


def test_without_any_optional_dependency_every_module_imports_or_names_its_extra():
    code = _BLOCKED_IMPORTS.format(optional=sorted(OPTIONAL))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    outcome = json.loads(run.stdout)
    assert outcome["emergence_fast.models"] == ("loading a model needs transformers, which is not installed: "
                                                "pip install 'emergence_fast[models]'")
    failing = {name: why for name, why in outcome.items() if why != "ok"}
    # Only the model loader needs an extra at import time; everything else imports with the core alone.
    assert set(failing) == {"emergence_fast.models"}, failing


def _copy_source(dest: Path) -> Path:
    ignore = shutil.ignore_patterns(".git", ".venv", "build", "runs", "*.so", "*.egg-info", "__pycache__",
                                    ".pytest_cache", ".hypothesis", ".benchmarks", ".ruff_cache")
    shutil.copytree(ROOT, dest, ignore=ignore)
    return dest


def _constraints(path: Path) -> Path:
    """Pin everything to the versions installed here, so pip reuses what this machine already fetched
    (an unpinned torch would pull a multi-GB CUDA build)."""
    pins = {}
    # Only what is installed in site-packages: a tool's vendored copy on sys.path (setuptools/_vendor holds
    # another `packaging`) would pin a second, conflicting version.
    for dist in importlib.metadata.distributions(path=site.getsitepackages()):
        name = (dist.metadata["Name"] or "").lower().replace("-", "_")
        if name and name != "emergence_fast" and name not in pins:
            pins[name] = f"{dist.metadata['Name']}=={dist.version}"
    path.write_text("\n".join(sorted(pins.values())) + "\n")
    return path


def _save_tiny_model(folder: Path) -> Path:
    import transformers as tf

    from tests.tiny_models import tiny_tokenizer

    torch.manual_seed(0)
    config = tf.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=64, bos_token_id=None,
                           eos_token_id=None)
    tf.GPT2LMHeadModel(config).eval().save_pretrained(folder)
    tiny_tokenizer(bos=False).save_pretrained(folder)
    return folder


@pytest.mark.slow
def test_pip_install_into_a_fresh_venv_gives_a_working_cli(tmp_path):
    """The two install routes a user meets, in a fresh virtualenv from a copy of the source tree:
    plain `pip install .` (isolated build: no torch there, so no native ops, and it says so), then
    `pip install --no-build-isolation ".[models]"` (native ops built, models loadable)."""
    src = _copy_source(tmp_path / "src")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py, cli = str(venv / "bin" / "python"), str(venv / "bin" / "emergence-fast")
    constraints = _constraints(tmp_path / "constraints.txt")
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"

    def run(*argv, check=True):
        done = subprocess.run(list(argv), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        if check:
            assert done.returncode == 0, f"{argv}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        return done

    run(py, "-m", "pip", "install", "-q", "-c", str(constraints), str(src))
    where = run(py, "-c", "import emergence_fast; print(emergence_fast.__file__)").stdout.strip()
    assert where.startswith(str(venv)), where  # the installed copy, not this checkout
    helptext = run(cli, "--help").stdout
    assert "{ie,estimators,backends,icl,mirage,make-family,sweep,bench}" in helptext
    cpp = next(line for line in run(cli, "backends").stdout.splitlines() if line.startswith("cpp"))
    assert cpp.split()[1] == "no" and "_C" in cpp, cpp  # no native ops from an isolated build, and why
    for sub in ("icl", "mirage"):
        run(py, "-c", f"import emergence_fast.{sub}")
    run(py, "-c", "import importlib.resources as r; assert (r.files('emergence_fast') / 'data' / 'animals.txt').is_file()")
    estimate = run(py, "-c", "import torch, emergence_fast as ef; g = torch.Generator().manual_seed(0); "
                             "x = torch.randn(4000, 1, generator=g); y = x + torch.randn(4000, 1, generator=g); "
                             "print(float(ef.mutual_information(x, y)))").stdout
    assert abs(float(estimate) - 0.5 * torch.log(torch.tensor(2.0)).item()) < 0.05  # I = ½ log 2 nats

    model = _save_tiny_model(tmp_path / "model")
    ids = tmp_path / "ids.pt"
    from tests.tiny_models import icl_ids
    torch.save(icl_ids(24, k_shots=2), ids)
    ie = [cli, "ie", "--model", str(model), "--dataset", f"ids:{ids}", "--n-samples", "24", "--quiet"]
    missing = run(*ie, "--out", str(tmp_path / "out0"), check=False)
    assert missing.returncode == 2, missing.stderr
    assert missing.stderr.strip().splitlines() == [
        "emergence-fast ie: error: loading a model needs transformers, which is not installed: "
        "pip install 'emergence_fast[models]'"]
    assert not (tmp_path / "out0").exists()

    run(py, "-m", "pip", "install", "-q", "-c", str(constraints), "setuptools")  # the build backend, for no isolation
    run(py, "-m", "pip", "install", "-q", "-c", str(constraints), "--no-build-isolation", f"{src}[models]")
    cpp = next(line for line in run(cli, "backends").stdout.splitlines() if line.startswith("cpp"))
    assert cpp.split()[1] == "yes", cpp  # the native ops were built into the installed copy
    done = run(*ie, "--out", str(tmp_path / "out"))
    result = json.loads((tmp_path / "out" / "ie.json").read_text())
    assert result["config"]["estimator"] == "noisy" and len(result["layers"]) == 2
    assert "matplotlib" in done.stderr  # PNGs skipped with the extra named, the results still written

"""benchmarks/gpu.sh on a CPU: what can be checked without the GPU machine it is written for.

The script runs on a lent H200 with no network, its own torch/Triton/nvcc, a 64 MiB tree and a
few minutes. Here: its syntax (and shellcheck where installed), the dry run's steps (every module
and flag it calls exists here), that the GPU tests it names are all the GPU tests, that the carried
wheels are the pinned list, closed under their dependencies and small enough to travel, the step
machinery (ok / failed / timeout / skipped for a missing module or a spent budget) driven by
sourcing the script, and the run on a machine without CUDA (exit 2 and a summary saying so).
"""
from __future__ import annotations

import functools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from packaging.markers import default_environment
from packaging.requirements import Requirement

from benchmarks import gpu_report

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu.sh"
WHEELS = ROOT / "benchmarks" / "gpu_wheels"
WHEEL_LIST = ROOT / "benchmarks" / "gpu_wheels.txt"
STEP_NAMES = ["wheels", "build", "backends", "tests", "roofline", "gaussian_lse", "gaussian_lse64", "pytest_bench"]
CARRY_LIMIT = 64 * 2**20  # what travels to the device machine: tracked tree + carried paths
# What gpu.sh's steps import that must be the machine's own build (compiled against its CUDA) or is
# built by the script itself; everything else they import must be in the wheel list.
FROM_THE_MACHINE = {"torch", "scipy", "numpy", "setuptools", "pip", "emergence_fast"}
# Module name -> distribution name, where they differ.
DISTRIBUTION = {"pytest_benchmark": "pytest-benchmark"}


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPU_SH_") and k != "OUT"}
    env.update(GPU_SH_PYTHON=sys.executable, **extra)
    return env


def _dry_run() -> dict[str, dict]:
    done = subprocess.run(["bash", str(SCRIPT)], env=_env(GPU_SH_DRY_RUN="1", OUT="/tmp/gpu-out-dry"),
                          capture_output=True, text=True, timeout=60, check=True)
    steps = {}
    for line in done.stdout.splitlines():
        match = re.fullmatch(r"STEP (\S+) timeout=(\d+) needs=(\S*): (.*)", line)
        assert match, f"a dry-run line that is not a step: {line!r}"
        name, limit, needs, command = match.groups()
        steps[name] = {"timeout": int(limit), "needs": needs.split(",") if needs else [], "argv": shlex.split(command)}
    return steps


@pytest.fixture(scope="module")
def steps():
    return _dry_run()


def _module_call(argv: list[str]) -> tuple[str, list[str]]:
    """(module, its arguments) of a `[env K=V ...] python -m module args...` command."""
    i = argv.index("-m")
    assert argv[i - 1] == sys.executable, f"the step must use the machine's python (GPU_SH_PYTHON): {argv}"
    return argv[i + 1], argv[i + 2:]


def _long_flags(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


@functools.lru_cache(maxsize=None)
def _help(*argv: str) -> str:
    done = subprocess.run([sys.executable, *argv, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=_env(TRITON_INTERPRET="0"))
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_scripts_parse():
    for script in (SCRIPT, ROOT / "benchmarks" / "gpu_wheels.sh"):
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_is_clean():
    done = subprocess.run(["shellcheck", "-x", str(SCRIPT), str(ROOT / "benchmarks" / "gpu_wheels.sh")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dry_run_lists_every_step_and_fits_the_time_limits(steps):
    assert list(steps) == STEP_NAMES
    # Each step alone fits one device command (10 minutes); the whole run is cut at the budget.
    assert all(0 < s["timeout"] <= 600 for s in steps.values())
    budget = int(re.search(r"GPU_SH_BUDGET_S:-(\d+)", SCRIPT.read_text()).group(1))
    assert budget + 30 <= 8 * 60, "the run (budget, plus preflight and summary) must end inside 8 minutes"


def test_results_go_under_out_and_fit_what_comes_back(steps):
    """Every file a step writes is under $OUT; with summary.json and gpu.log at most 8 come back."""
    written = {a.split("=", 1)[1] if a.startswith("--") else a
               for s in steps.values() for i, a in enumerate(s["argv"])
               if a.startswith(("--junit-xml=", "--benchmark-json=")) or s["argv"][i - 1] == "--write"}
    assert written and all(Path(p).parent == Path("/tmp/gpu-out-dry") for p in written), written
    names = {Path(p).name for p in written} | {gpu_report.SUMMARY_FILE, "gpu.log"}
    assert names == {"results.md", "summary.json", "gpu.log", "tests.xml", "bench.json"}
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names)


@pytest.mark.parametrize("module", ["benchmarks.roofline", "benchmarks.gaussian_lse", "emergence_fast.cli"])
def test_python_steps_call_modules_that_accept_their_flags(steps, module):
    calls = [args for s in steps.values() for m, args in [_module_call(s["argv"])] if m == module]
    assert calls, f"no step calls {module}"
    for args in calls:
        subcommands = [a for a in args if not a.startswith("-")][:1] if module == "emergence_fast.cli" else []
        text = _help("-m", module, *subcommands)
        for flag in _long_flags(args):
            assert flag in text, f"{module} {' '.join(subcommands)} does not take {flag}"


def test_pytest_steps_flags_paths_and_marker(steps):
    # pytest-benchmark's options are listed when it is installed, as there; the conftests are not needed.
    text = _help("-m", "pytest", "--noconftest")
    for name in ("tests", "pytest_bench"):
        module, args = _module_call(steps[name]["argv"])
        assert module == "pytest"
        for flag in _long_flags(args) + [a for a in args if re.fullmatch(r"-\w", a)]:
            assert re.search(rf"(^|\s|,){re.escape(flag)}[\s=,]", text, re.M), f"pytest does not take {flag}"
        paths = [a for a in args if not a.startswith("-") and "=" not in a and a not in ("gpu", "no:cacheprovider")]
        assert paths and all((ROOT / p).exists() for p in paths), paths
    assert '"gpu: needs a CUDA device"' in (ROOT / "pyproject.toml").read_text()  # -m gpu selects a registered marker


def test_the_build_and_wheel_steps_use_offline_pip_flags(steps):
    build = steps["build"]["argv"]
    assert build[-4:] == ["--no-deps", "--no-index", "-e", "."] and "--no-build-isolation" in build
    text = _help("-m", "pip", "install")
    for flag in _long_flags(build) + ["--target", "--no-compile", "--no-cache-dir"]:
        assert flag in text, f"pip install does not take {flag}"
    assert _module_call(steps["wheels"]["argv"])[1] == ["install-wheels", "benchmarks/gpu_wheels", "/tmp/emergence-fast-gpu-site"]


def test_every_gpu_test_is_in_the_paths_gpu_sh_runs(steps):
    _, args = _module_call(steps["tests"]["argv"])
    paths = [ROOT / a for a in args if (ROOT / a).exists()]
    gpu_files = [p for p in (ROOT / "tests").rglob("test_*.py")
                 if re.search(r"pytest\.mark\.gpu|device_backend_pairs\(", p.read_text())]
    assert gpu_files
    outside = [str(p.relative_to(ROOT)) for p in gpu_files if not any(p == d or d in p.parents for d in paths)]
    assert not outside, f"GPU tests that gpu.sh does not run (add them to GPU_TESTS): {outside}"


def test_every_module_a_step_needs_comes_from_the_machine_or_the_wheel_list(steps):
    listed = {Requirement(r).name for r in _wheel_list()}
    for name, step in steps.items():
        for module in step["needs"]:
            assert module in FROM_THE_MACHINE or gpu_report._normalize(DISTRIBUTION.get(module, module)) in listed, \
                f"step {name} needs {module}: pin it in benchmarks/gpu_wheels.txt or name it as the machine's own"


def _wheel_list() -> list[str]:
    lines = [line.strip() for line in WHEEL_LIST.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_wheel_list_pins_one_version_of_each():
    reqs = [Requirement(line) for line in _wheel_list()]
    names = [gpu_report._normalize(r.name) for r in reqs]
    assert len(names) == len(set(names))
    assert all(len(r.specifier) == 1 and next(iter(r.specifier)).operator == "==" for r in reqs)
    assert not {"torch", "numpy", "scipy"} & set(names)  # the machine's CUDA builds must not be shadowed


needs_wheels = pytest.mark.skipif(not any(WHEELS.glob("*.whl")),
                                  reason="no wheels in benchmarks/gpu_wheels (bash benchmarks/gpu_wheels.sh fills it)")


@needs_wheels
def test_wheelhouse_is_the_list_closed_under_dependencies_and_travels():
    pinned = {gpu_report._normalize(r.name): str(next(iter(r.specifier)).version)
              for r in map(Requirement, _wheel_list())}
    wheels = sorted(WHEELS.glob("*.whl"))
    found = {gpu_report.wheel_name(w): w.name.split("-")[1] for w in wheels}
    assert found == pinned
    target = default_environment() | {"python_version": "3.12", "python_full_version": "3.12.3",
                                       "sys_platform": "linux", "platform_system": "Linux",
                                       "platform_machine": "x86_64", "implementation_name": "cpython"}
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as z:
            metadata = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
        for line in metadata.splitlines():
            if not line.startswith("Requires-Dist:"):
                continue
            req = Requirement(line.split(":", 1)[1].strip())
            if req.marker is not None and not req.marker.evaluate(target | {"extra": ""}):
                continue
            name = gpu_report._normalize(req.name)
            assert name in pinned, f"{wheel.name} needs {req} on Python 3.12, which benchmarks/gpu_wheels.txt lacks"
            assert req.specifier.contains(pinned[name], prereleases=True), f"{wheel.name} needs {req}, pinned {pinned[name]}"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    tree = sum((ROOT / os.fsdecode(p)).stat().st_size for p in tracked if p and (ROOT / os.fsdecode(p)).is_file())
    carried = sum(w.stat().st_size for w in wheels)
    assert carried < 8 * 2**20 and tree + carried < CARRY_LIMIT, (tree, carried)


def _wheel(folder: Path, dist: str, version: str = "1.0", module: str | None = None) -> Path:
    """A minimal pure-Python wheel holding one module (empty except a constant)."""
    module = module or dist.replace("-", "_")
    info = f"{dist.replace('-', '_')}-{version}.dist-info"
    path = folder / f"{dist.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{module}.py", "VALUE = 42\n")
        z.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


def test_wheels_to_install_leaves_out_what_is_installed(tmp_path):
    _wheel(tmp_path, "pytest", "0.0.1")  # installed here: its wheel would shadow the machine's copy
    absent = _wheel(tmp_path, "no-such-dist-for-gpu-sh")
    assert gpu_report.wheels_to_install(tmp_path) == [absent]


def test_wheels_to_install_refuses_two_versions_of_one_distribution(tmp_path):
    _wheel(tmp_path, "no-such-dist-for-gpu-sh", "1.0")
    _wheel(tmp_path, "No_Such.Dist-for-gpu-sh", "2.0")
    with pytest.raises(ValueError, match=r"two wheels for no-such-dist-for-gpu-sh in .*: "
                                         r"No_Such.Dist_for_gpu_sh-2.0-py3-none-any.whl and "
                                         r"no_such_dist_for_gpu_sh-1.0-py3-none-any.whl; keep one"):
        gpu_report.wheels_to_install(tmp_path)


def test_wheel_name_refuses_other_files():
    with pytest.raises(ValueError, match=r"'notes.txt' is not a wheel file name"):
        gpu_report.wheel_name(Path("notes.txt"))


def test_install_wheels_installs_the_missing_one_offline(tmp_path):
    folder, target = tmp_path / "wheels", tmp_path / "site"
    folder.mkdir()
    _wheel(folder, "no-such-dist-for-gpu-sh", module="gpu_sh_probe")
    assert gpu_report.install_wheels(folder, target) == 0
    assert (target / "gpu_sh_probe.py").read_text() == "VALUE = 42\n"


def test_install_wheels_without_a_wheelhouse_says_so(tmp_path, capsys):
    assert gpu_report.install_wheels(tmp_path / "absent", tmp_path / "site") == 0
    assert "no wheels in" in capsys.readouterr().out and not (tmp_path / "site").exists()


def test_missing_modules():
    assert gpu_report.missing_modules(["json", "no_such_module_for_gpu_sh", "no_such_pkg.sub"]) == [
        "no_such_module_for_gpu_sh", "no_such_pkg.sub"]


def test_read_steps_refuses_a_short_line(tmp_path):
    path = tmp_path / "steps.tsv"
    path.write_text("build\tok\t0\n")
    with pytest.raises(ValueError, match=r"steps.tsv:1: expected 7 tab-separated fields .* got 3"):
        gpu_report.read_steps(path)


def test_junit_counts(tmp_path):
    path = tmp_path / "tests.xml"
    path.write_text('<testsuites><testsuite tests="5" failures="1" errors="0" skipped="2"/></testsuites>')
    assert gpu_report.junit_counts(path) == {"tests": 5, "failures": 1, "errors": 0, "skipped": 2}
    assert gpu_report.junit_counts(tmp_path / "absent.xml") is None


def test_step_records_ok_failed_timeout_and_skips(tmp_path):
    """Source gpu.sh and drive step() with stand-in commands; the summary reads what it recorded."""
    out = tmp_path / "out"
    driver = f"""
        source {shlex.quote(str(SCRIPT))}
        cd {shlex.quote(str(ROOT))}
        start_output
        BUDGET_S=100
        step passes 5 "" true
        step fails 5 "" false
        step hangs 1 "" sleep 30
        step lacks 5 "json no_such_module_for_gpu_sh" true
        BUDGET_S=$((SECONDS - START + 20))
        step cut 60 "" true
        BUDGET_S=0
        step late 5 "" true
        echo "FAILED=$FAILED"
        cp "$STEPS" {shlex.quote(str(tmp_path / 'steps.tsv'))}
    """
    done = subprocess.run(["bash", "-c", driver], env=_env(OUT=str(out)), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "FAILED=1" in done.stdout
    steps = {s["name"]: s for s in gpu_report.read_steps(tmp_path / "steps.tsv")}
    assert {k: (s["status"], s["rc"]) for k, s in steps.items()} == {
        "passes": ("ok", 0), "fails": ("failed", 1), "hangs": ("timeout", 124), "lacks": ("skipped", 0),
        "cut": ("ok", 0), "late": ("skipped", 0)}
    assert steps["hangs"]["seconds"] <= 3 and steps["hangs"]["reason"] == "stopped after 1 s"
    assert steps["lacks"]["reason"].startswith("missing module(s): no_such_module_for_gpu_sh (")
    assert 15 <= steps["cut"]["timeout_s"] <= 20  # a step's limit is cut to what is left of the budget
    assert steps["late"]["reason"] == "the 0 s budget was spent"
    assert "===== fails (limit 5 s): false" in (out / "gpu.log").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the run on a machine without CUDA")
def test_without_cuda_the_run_stops_with_a_summary(tmp_path):
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(SCRIPT)], env=_env(OUT=str(out)), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "torch sees no CUDA device" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is False and summary["env"]["cuda_available"] is False
    assert [(s["name"], s["status"], s["reason"]) for s in summary["steps"]] == [("preflight", "failed", "no CUDA device")]
    results = (out / "results.md").read_text()
    assert results.startswith("## GPU run: no CUDA device (benchmarks/gpu.sh)") and "| preflight | failed |" in results


def _fake_env(cuda_off_reason=None) -> dict:
    backend = {"available": True, "devices": ["cuda"], "reason": "ok"}
    backends = {"torch": backend, "triton": backend,
                "cuda": {"available": False, "devices": [], "reason": cuda_off_reason} if cuda_off_reason else backend}
    return {"date_utc": "2026-01-01T00:00:00+00:00", "cuda_available": True, "gpu": "NVIDIA H200", "backends": backends}


@pytest.mark.parametrize("cuda_off", [None, "emergence_fast._C was built without CUDA"])
def test_summary_counts_tests_and_fails_when_a_gpu_backend_is_off(tmp_path, monkeypatch, capsys, cuda_off):
    monkeypatch.setattr(gpu_report, "environment", lambda with_backends=True: _fake_env(cuda_off))
    steps = tmp_path / "steps.tsv"
    steps.write_text("build\tok\t0\t70\t240\t\tpip install -e .\ntests\tok\t0\t90\t180\t\tpytest\n")
    (tmp_path / "tests.xml").write_text('<testsuites><testsuite tests="40" failures="0" errors="0" skipped="3"/></testsuites>')
    (tmp_path / "bench.json").write_text(json.dumps({"benchmarks": [{}, {}]}))
    assert gpu_report.summary(steps, tmp_path, 450) == (1 if cuda_off else 0)
    record = json.loads((tmp_path / "summary.json").read_text())
    assert record["total_s"] == 160 and record["tests"]["tests"] == 40 and record["pytest_benchmarks"] == 2
    assert record["gpu_backends_off"] == ({"cuda": cuda_off} if cuda_off else {})
    results = (tmp_path / "results.md").read_text()
    assert results.startswith("## GPU run: NVIDIA H200 (benchmarks/gpu.sh)")
    assert "- GPU tests (`pytest -m gpu`): 40 collected, 0 failed, 0 errors, 3 skipped" in results
    assert (f"- the cuda backend is OFF on this GPU: {cuda_off}" in results) == bool(cuda_off)
    assert ("SOME STEPS FAILED" in capsys.readouterr().out) == bool(cuda_off)

"""Helpers for ``benchmarks/gpu.sh``: what the machine has, which carried wheels to install, the summary.

Standard library only at import time: it runs before anything is installed, on a machine that may
lack torch. Subcommands::

    python -m benchmarks.gpu_report needs MODULE...            # exit 1 and print the missing ones
    python -m benchmarks.gpu_report env [--require-cuda]       # the machine as JSON (exit 3: no CUDA)
    python -m benchmarks.gpu_report install-wheels DIR TARGET  # pip-install DIR's wheels that are missing
    python -m benchmarks.gpu_report header FILE                # start FILE: a RESULTS.md section's header
    python -m benchmarks.gpu_report summary --steps TSV --out DIR [--budget-s S]
"""
from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

# The columns gpu.sh writes, tab-separated, one line per step.
STEP_FIELDS = ("name", "status", "rc", "seconds", "timeout_s", "reason", "command")
SUMMARY_FILE = "summary.json"
RESULTS_FILE = "results.md"
TESTS_FILE = "tests.xml"
BENCH_FILE = "bench.json"


def missing_modules(names) -> list[str]:
    """The names in ``names`` that no import could find (the module is not executed)."""
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a parent package that is absent or broken
            found = False
        if not found:
            missing.append(name)
    return missing


def _normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them (Py_CPUinfo2 == py-cpuinfo2)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(path: Path) -> str:
    """The normalized distribution name of a wheel file (the part before the first '-')."""
    if path.suffix != ".whl" or path.name.count("-") < 4:
        raise ValueError(f"{path.name!r} is not a wheel file name (name-version-python-abi-platform.whl)")
    return _normalize(path.name.split("-", 1)[0])


def wheels_to_install(folder: Path) -> list[Path]:
    """The wheels in ``folder`` whose distribution is not installed here, sorted by file name.

    A wheel for an installed distribution is left out on purpose: installed with ``--target`` on
    PYTHONPATH it would shadow the machine's own copy, which its other packages were built against.
    Raises ValueError when two wheels carry the same distribution (pip would refuse the lot).
    """
    wheels = sorted(folder.glob("*.whl"))
    seen: dict[str, str] = {}
    for wheel in wheels:
        name = wheel_name(wheel)
        if name in seen:
            raise ValueError(f"two wheels for {name} in {folder}: {seen[name]} and {wheel.name}; keep one")
        seen[name] = wheel.name
    installed = {_normalize(dist.metadata["Name"] or "") for dist in importlib.metadata.distributions()}
    return [wheel for wheel in wheels if wheel_name(wheel) not in installed]


def install_wheels(folder: Path, target: Path) -> int:
    """pip-install (offline, no dependencies) the wheels of ``folder`` that are missing into ``target``."""
    if not folder.is_dir() or not any(folder.glob("*.whl")):
        print(f"no wheels in {folder} (benchmarks/gpu_wheels.sh fills it where pip can reach an index; "
              f"carry it to the GPU machine): using the machine's packages only")
        return 0
    wanted = wheels_to_install(folder)
    if not wanted:
        print(f"every wheel in {folder} is already installed here: none installed")
        return 0
    print("installing from the carried wheels: " + ", ".join(w.name for w in wanted))
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--upgrade", "--target", str(target), *map(str, wanted)]
    return subprocess.run(command, check=False).returncode


def _run(command: list[str]) -> str | None:
    """The command's stripped stdout, or None when it is missing, fails or hangs."""
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except subprocess.TimeoutExpired:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def environment(with_backends: bool = True) -> dict:
    """Python, torch, CUDA, Triton, nvcc, driver, GPU and the commit: what a number was measured with.

    ``with_backends`` adds emergence_fast's backend table (imports the package, triton included).
    """
    env = {"date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "python": platform.python_version(), "python_executable": sys.executable,
           "cpu_count": os.cpu_count(), "platform": platform.platform(),
           "commit": _run(["git", "rev-parse", "HEAD"])}
    nvcc = _run(["nvcc", "--version"])
    env["nvcc"] = nvcc.splitlines()[-1] if nvcc else None
    env["driver"] = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    for module in ("torch", "triton", "numpy", "scipy"):
        try:
            env[module] = importlib.metadata.version(module)
        except importlib.metadata.PackageNotFoundError:
            env[module] = None
    if env["torch"] is not None:
        import torch

        env["torch_cuda"] = torch.version.cuda
        env["cuda_available"] = torch.cuda.is_available()
        if env["cuda_available"]:
            props = torch.cuda.get_device_properties(0)
            env.update(gpu=props.name, gpu_count=torch.cuda.device_count(), gpu_memory_gib=round(props.total_memory / 2**30, 1),
                       compute_capability=f"{props.major}.{props.minor}", multiprocessors=props.multi_processor_count)
    else:
        env["cuda_available"] = False
    if with_backends and importlib.util.find_spec("emergence_fast") is not None:
        try:
            from emergence_fast import backends

            env["backends"] = {name: {"available": s.available, "devices": list(s.devices), "reason": s.reason}
                               for name, s in backends().items()}
        except Exception as exc:  # the build may have failed: say so, do not hide the rest
            env["backends"] = f"emergence_fast could not be imported ({type(exc).__name__}: {exc})"
    return env


def _describe(env: dict) -> str:
    gpu = env.get("gpu") or "no CUDA device"
    return (f"{gpu} ({env.get('gpu_memory_gib', '?')} GiB), driver {env.get('driver')}, torch {env.get('torch')} "
            f"(CUDA {env.get('torch_cuda')}), Triton {env.get('triton')}, nvcc: {env.get('nvcc')}, "
            f"Python {env.get('python')}, {env.get('cpu_count')} CPU cores")


def header(path: Path, env: dict) -> None:
    """Start ``path`` with a RESULTS.md section header; the benchmark scripts append their tables to it."""
    lines = [f"## GPU run: {env.get('gpu') or 'no CUDA device'} (benchmarks/gpu.sh)", "",
             f"- machine: {_describe(env)}",
             f"- load average (1, 5, 15 min) when the run began: {', '.join(f'{x:.2f}' for x in os.getloadavg())}",
             f"- date: {env['date_utc']}", "- command: `bash benchmarks/gpu.sh`",
             f"- commit: {env.get('commit') or 'unknown (no .git in the copied tree)'}",
             "- each table below names the script and flags that made it", ""]
    path.write_text("\n".join(lines) + "\n")


def read_steps(path: Path) -> list[dict]:
    """gpu.sh's tab-separated step records as dicts (rc, seconds and timeout_s as ints)."""
    steps = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split("\t")
        if len(fields) != len(STEP_FIELDS):
            raise ValueError(f"{path}:{number}: expected {len(STEP_FIELDS)} tab-separated fields "
                             f"{STEP_FIELDS}, got {len(fields)}")
        step = dict(zip(STEP_FIELDS, fields))
        for key in ("rc", "seconds", "timeout_s"):
            step[key] = int(step[key])
        steps.append(step)
    return steps


def junit_counts(path: Path) -> dict | None:
    """Totals of a pytest JUnit XML file: tests, failures, errors, skipped (None when absent)."""
    if not path.is_file():
        return None
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    return {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}


def summary(steps_path: Path, out: Path, budget_s: int) -> int:
    """Write ``out/summary.json``, end ``out/results.md`` with the steps, print a short summary.

    Returns 0 when every step that ran passed, 1 otherwise (skipped steps are listed, not failures).
    """
    steps = read_steps(steps_path) if steps_path.is_file() else []
    env = environment()
    tests = junit_counts(out / TESTS_FILE)
    bench = out / BENCH_FILE
    n_bench = len(json.loads(bench.read_text()).get("benchmarks", [])) if bench.is_file() else None
    # On a GPU, a build that left the cuda or triton backend off has not tested or measured that backend.
    gpu_off = ({name: s["reason"] for name, s in env["backends"].items() if name in ("cuda", "triton") and not s["available"]}
               if env["cuda_available"] and isinstance(env.get("backends"), dict) else {})
    ok = all(step["status"] in ("ok", "skipped") for step in steps) and not gpu_off
    record = {"ok": ok, "gpu_backends_off": gpu_off, "budget_s": budget_s, "total_s": sum(s["seconds"] for s in steps), "env": env,
              "steps": steps, "tests": tests, "pytest_benchmarks": n_bench}
    (out / SUMMARY_FILE).write_text(json.dumps(record, indent=2) + "\n")

    table = ["| step | status | s | limit s | note |", "|---|---|---|---|---|"]
    table += [f"| {s['name']} | {s['status']} | {s['seconds']} | {s['timeout_s']} | {s['reason'] or ''} |" for s in steps]
    notes = [f"- the {name} backend is OFF on this GPU: {reason}" for name, reason in gpu_off.items()]
    if tests is not None:
        notes.append(f"- GPU tests (`pytest -m gpu`): {tests['tests']} collected, {tests['failures']} failed, "
                     f"{tests['errors']} errors, {tests['skipped']} skipped")
    if n_bench is not None:
        notes.append(f"- pytest-benchmark: {n_bench} benchmarks in {BENCH_FILE} (returned beside this file)")
    results = out / RESULTS_FILE
    if not results.is_file():  # the run stopped before gpu.sh wrote the header
        header(results, env)
    with results.open("a") as f:
        f.write("\n".join(["", "### Steps of this run", "", *table, "", *notes]) + "\n")

    print(f"\n== gpu.sh summary: {'all steps passed' if ok else 'SOME STEPS FAILED'} "
          f"({record['total_s']} s of the {budget_s} s budget)")
    print(_describe(env))
    if isinstance(env.get("backends"), dict):
        print("backends: " + "; ".join(f"{name}: {', '.join(s['devices']) or 'off (' + s['reason'] + ')'}"
                                       for name, s in env["backends"].items()))
    elif "backends" in env:
        print(env["backends"])
    print("\n".join(table))
    print("\n".join(notes))
    print(f"files in {out}: " + ", ".join(sorted(p.name for p in out.iterdir() if p.is_file())))
    print(f"{RESULTS_FILE} is a section for benchmarks/RESULTS.md; {SUMMARY_FILE} holds every step and the machine.")
    return 0 if ok else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("needs", help="exit 1 and print the modules that cannot be imported")
    p.add_argument("modules", nargs="+")
    p = sub.add_parser("env", help="print the machine as JSON")
    p.add_argument("--require-cuda", action="store_true", help="exit 3 when torch sees no CUDA device")
    p = sub.add_parser("install-wheels", help="install DIR's wheels whose distribution is missing into TARGET")
    p.add_argument("folder", type=Path)
    p.add_argument("target", type=Path)
    p = sub.add_parser("header", help="write a RESULTS.md section header to FILE")
    p.add_argument("file", type=Path)
    p = sub.add_parser("summary", help="write summary.json, end results.md, print the summary")
    p.add_argument("--steps", type=Path, required=True, help="gpu.sh's step records (TSV)")
    p.add_argument("--out", type=Path, required=True, help="the output folder")
    p.add_argument("--budget-s", type=int, required=True, help="the run's time budget, seconds")
    args = parser.parse_args(argv)

    if args.command == "needs":
        missing = missing_modules(args.modules)
        if missing:
            print(" ".join(missing))
        return 1 if missing else 0
    if args.command == "env":
        env = environment(with_backends=False)
        print(json.dumps(env, indent=2))
        return 3 if args.require_cuda and not env["cuda_available"] else 0
    if args.command == "install-wheels":
        return install_wheels(args.folder, args.target)
    if args.command == "header":
        header(args.file, environment(with_backends=False))
        return 0
    return summary(args.steps, args.out, args.budget_s)


if __name__ == "__main__":
    sys.exit(main())

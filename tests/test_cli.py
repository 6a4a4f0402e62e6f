import io

from emergence_fast import cli


def test_demo_prints_a_table_with_known_answers():
    out = io.StringIO()
    cli.demo(out=out)
    text = out.getvalue()
    assert "MI gaussian d=128" in text and "token entropy" in text
    row = next(line for line in text.splitlines() if "MI gaussian d=1 " in line).split()
    truth, plug_in = float(row[-5]), float(row[-4])
    assert abs(truth - 0.4133) < 1e-4 and abs(plug_in - truth) < 0.05


def test_backends_command(capsys):
    assert cli.main(["backends"]) == 0
    assert "torch" in capsys.readouterr().out


def test_a_non_editable_install_ships_every_subpackage_and_a_working_cli(tmp_path):
    """A wheel once lacked icl/ and mirage/; tests on the editable install could not see it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "EMERGENCE_FAST_NO_EXT": "1"}
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(tmp_path / "site"), str(root)], check=True, env=env, capture_output=True)
    run = subprocess.run([sys.executable, "-c", "import emergence_fast.icl, emergence_fast.mirage, emergence_fast.kernels; "
                          "from emergence_fast.cli import main; main(['--help'])"],
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path / "site")},
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "{ie,estimators,backends,icl,mirage,bench}" in run.stdout
    assert (tmp_path / "site" / "emergence_fast" / "data" / "animals.txt").exists()

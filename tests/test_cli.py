import io

import pytest

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


@pytest.mark.parametrize("argv, message", [
    (["--sigma", "abc"], "argument --sigma: invalid float value: 'abc'"),
    (["--sigma", "0"], "sigma must be a finite number > 0"),
    (["--n-draws", "1"], "n_draws must be an integer >= 2"),
    (["--estimator", "gaussian", "--sigma", "0.2"], "--sigma applies to --estimator noisy only"),
    (["--sigma", "0.1", "--option", "sigma=0.2"], "--option sigma=... repeats --sigma"),
])
def test_bad_estimator_flags_are_one_line_before_the_model_loads(argv, message, capsys, monkeypatch, tmp_path):
    from emergence_fast import models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model was loaded before the check"))
    try:
        code = cli.main(["ie", *argv, "--out", str(tmp_path / "out")])
    except SystemExit as exit_:  # argparse's own checks exit; ours return the code
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("emergence-fast ie: error:")

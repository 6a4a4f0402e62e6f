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

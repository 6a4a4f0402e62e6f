"""Where benchmark scripts put their tables: stdout, and appended to RESULTS.md when asked."""
import datetime
import sys


def provenance(script: str, argv) -> list[str]:
    """The date and the exact command, which every recorded number must carry."""
    args = " ".join(argv if argv is not None else sys.argv[1:])
    return [f"- date: {datetime.date.today().isoformat()}", f"- command: `python -m benchmarks.{script} {args}`"]


def emit(lines: list[str], path: str | None) -> None:
    text = "\n".join(lines) + "\n"
    print(text)
    if path:
        with open(path, "a") as f:
            f.write("\n" + text)

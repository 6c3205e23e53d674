"""python -m runner.compare RUN_A RUN_B [out=FOLDER]    (or two checkpoint files, or one SWEEP_DIR)

Writes compare.md and curves.png (default folder: outputs/tools/compare/<A>_vs_<B>) and prints
compare.md. The work is in runner/evaluation/compare.py.
"""

import sys
from pathlib import Path

from runner.errors import UserError


def cli(argv: list[str] | None = None) -> None:
    """`python -m runner.compare` and the `runner-compare` console command."""
    from runner.evaluation.comparison import (
        compare,
        curves_png,
        disagreements_png,
        report,
        trials_of,
    )
    from runner.io import write_text_atomic

    args = sys.argv[1:] if argv is None else argv
    out = next((Path(a.split("=", 1)[1]) for a in args if a.startswith("out=")), None)
    runs = [Path(a) for a in args if not a.startswith("out=")]
    try:
        for run in runs:
            if not run.exists():
                raise UserError(f"{run} does not exist. Fix: python -m runner.compare RUN_A RUN_B (run folders or "
                                "their checkpoint files), or a sweep folder")
        if len(runs) == 1 and runs[0].is_dir():
            runs = list(trials_of(runs[0]))
        if len(runs) != 2:
            raise UserError(f"{len(runs)} folders given. Fix: python -m runner.compare RUN_A RUN_B, or SWEEP_DIR")
        result = compare(*runs)
        out = out or Path("outputs/tools/compare") / f"{runs[0].stem}_vs_{runs[1].stem}"
        out.mkdir(parents=True, exist_ok=True)
        curves_png(*runs, out / "curves.png")
        result["gallery"] = disagreements_png(result, out / "disagreements.png")
        text = report(result)
        write_text_atomic(out / "compare.md", text)
    except UserError as error:
        print(f"runner.compare: {error}", file=sys.stderr)
        sys.exit(2)
    print(text)
    print(f"written: {out / 'compare.md'} (with curves.png{', disagreements.png' if result['gallery'] else ''})")


if __name__ == "__main__":
    cli()

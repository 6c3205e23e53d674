"""python -m runner.runs [FOLDER] [sort=best] [where=model=convnet ...] [format=table|csv|markdown]

Every run below FOLDER (default: outputs) in one table: start, name, folder, status, git commit
(+dirty), its command-line overrides, epochs done, the best validation metric with its 95%
interval, the best checkpoint (with its weights where averaged: "epoch-0009.pt (ema)"). The work
is in runner/evaluation/run_table.py.
"""

import sys
from pathlib import Path

from runner.common.errors import UserError

HELP = """runner.runs: every run below FOLDER (default: outputs) in one table: start, name, folder, status, git
commit, overrides, epochs done, the best validation metric with its 95% interval, the best checkpoint
(and its weights where averaged: "checkpoints/epoch-0009.pt (ema)").

python -m runner.runs [FOLDER] [sort=KEY] [where=KEY=VALUE ...] [format=table|csv|markdown]
python -m runner.runs outputs sort=best where=model=convnet     best first, convnet runs only
python -m runner.runs outputs/flowers format=markdown            or format=csv
(installed, `runner-runs` is the same command)
"""


def cli(argv: list[str] | None = None) -> None:
    """`python -m runner.runs` and the `runner-runs` console command."""
    args = sys.argv[1:] if argv is None else argv
    if "--help" in args or "-h" in args:
        print(HELP, end="")
        return
    from runner.evaluation.run_table import formatted, table

    settings = {"sort": None, "format": "table"}
    where, folders = [], []
    try:
        for arg in args:
            key, _, value = arg.partition("=")
            if not _:
                folders.append(arg)
            elif key == "where":
                where.append(value)
            elif key in settings:
                settings[key] = value
            else:
                raise UserError(f"{arg!r} is not a setting of runner.runs. Fix: sort=KEY, where=KEY=VALUE or "
                                "format=table|csv|markdown")
        if settings["format"] not in ("table", "csv", "markdown"):
            raise UserError(f"format={settings['format']!r} is not known. Fix: format=table, csv or markdown")
        rows = table(Path(folders[0] if folders else "outputs"), settings["sort"], where)
    except UserError as error:
        print(f"runner.runs: {error}", file=sys.stderr)
        sys.exit(2)
    sys.stdout.write(formatted(rows, settings["format"]))


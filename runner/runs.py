"""python -m runner.runs [FOLDER] [sort=best] [where=model=convnet ...] [format=table|csv|markdown]

Every run below FOLDER (default: outputs) in one table: start, name, folder, status, git commit
(+dirty), its command-line overrides, epochs done, the best validation metric with its 95%
interval, the best checkpoint. The work is in runner/evaluation/run_table.py.
"""

import sys
from pathlib import Path

from runner.errors import UserError


def cli(argv: list[str] | None = None) -> None:
    """`python -m runner.runs` and the `runner-runs` console command."""
    from runner.evaluation.run_table import formatted, table

    args = sys.argv[1:] if argv is None else argv
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


if __name__ == "__main__":
    cli()

"""python -m runner.runs [FOLDER] [sort=best] [where=model=convnet ...] [group_by=auto] [format=table|csv|markdown]

Every run below FOLDER (default: outputs) in one table: start, name, folder, status, git commit
(+dirty), its command-line overrides, epochs done, the best validation metric with its 95%
interval, the best checkpoint (with its weights where averaged: "epoch-0009.pt (ema)"). With
group_by=auto, one row per seed group or cross-validation (runner/evaluation/groups.py). The work
is in runner/evaluation/run_table.py.
"""

import sys
from pathlib import Path

from runner.common.errors import UserError

HELP = """runner.runs: every run below FOLDER (default: outputs) in one table: start, name, folder, status, git
commit, overrides, epochs done, the best validation metric with its 95% interval, the best checkpoint
(and its weights where averaged: "checkpoints/epoch-0009.pt (ema)").

python -m runner.runs [FOLDER] [sort=KEY] [where=KEY=VALUE ...] [group_by=none|auto|KEY,...] [format=table|csv|markdown]
python -m runner.runs outputs sort=best where=model=convnet     best first, convnet runs only
python -m runner.runs outputs group_by=auto                     one row per group of runs that differ only in
                                                                trainer.seed (or dataset.fold): n, mean, std, 95%
                                                                t-interval of the best metric
python -m runner.runs outputs group_by=trainer.seed,optimizer.lr  pool over exactly these keys
python -m runner.runs outputs/flowers format=markdown            or format=csv
(installed, `runner-runs` is the same command)
"""


def cli(argv: list[str] | None = None) -> None:
    """`python -m runner.runs` and the `runner-runs` console command."""
    args = sys.argv[1:] if argv is None else argv
    if "--help" in args or "-h" in args:
        print(HELP, end="")
        return
    from runner.evaluation.run_table import COLUMNS, formatted, sorted_rows, table

    settings = {"sort": None, "format": "table", "group_by": "none"}
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
                raise UserError(f"{arg!r} is not a setting of runner.runs. Fix: sort=KEY, where=KEY=VALUE, "
                                "group_by=auto|none|KEY,... or format=table|csv|markdown")
        if settings["format"] not in ("table", "csv", "markdown"):
            raise UserError(f"format={settings['format']!r} is not known. Fix: format=table, csv or markdown")
        columns = COLUMNS
        if settings["group_by"] == "none":
            from runner.evaluation.human import human_rows

            # runner.label's answers folders: the human beside the models
            root = Path(folders[0] if folders else "outputs")
            rows = sorted_rows(table(root, None, where) + ([] if where else human_rows(root)), settings["sort"],
                               COLUMNS, "best")
        else:  # one row per group of runs (runner/evaluation/groups.py)
            from runner.evaluation.groups import GROUP_COLUMNS, group_rows

            runs = table(Path(folders[0] if folders else "outputs"), None, where)
            rows, columns = sorted_rows(group_rows(runs, settings["group_by"]), settings["sort"], GROUP_COLUMNS,
                                        "mean"), GROUP_COLUMNS
    except UserError as error:
        print(f"runner.runs: {error}", file=sys.stderr)
        sys.exit(2)
    sys.stdout.write(formatted(rows, settings["format"], columns))


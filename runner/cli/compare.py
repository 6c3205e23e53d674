"""python -m runner.compare RUN_A RUN_B [out=FOLDER]    (or two checkpoint files, or one SWEEP_DIR, or an ENSEMBLE,
or two groups of runs: GROUP_A GROUP_B, each a folder holding runs or a quoted glob of run folders)

Writes compare.md and curves.png (default folder: outputs/tools/compare/<A>_vs_<B>) and prints
compare.md. The work is in runner/evaluation/comparison.py.
"""

import sys
from pathlib import Path

from runner.common.errors import UserError

HELP = """runner.compare: two runs side by side: the settings that differ, both best metrics with their intervals,
a paired test on the samples both were evaluated on, per-class changes, both runs' curves.

python -m runner.compare RUN_A RUN_B [out=FOLDER]     two evaluated runs (or two checkpoint files)
python -m runner.compare SWEEP_DIR                    a sweep's best trial against the runner-up
python -m runner.compare STUDENT ENSEMBLE             a run against an ensemble (either side): its summary
                                                      (ensemble.val.json) or its folder, as
                                                      `python -m runner.evaluate 'ensemble=[...]'` wrote them
python -m runner.compare ANSWERS RUN                  your own labels (python -m runner.label's answers folder)
                                                      against a run's best checkpoint on the same samples:
                                                      exact McNemar test, paired bootstrap interval
python -m runner.compare GROUP_A GROUP_B              two groups of runs that differ only in trainer.seed (or
                                                      dataset.fold): each a folder holding the runs, or a quoted
                                                      glob ('outputs/exp/*/lr0.1*'); Welch's t-test across seeds,
                                                      and a paired t-test over the shared validation samples of
                                                      the seed-averaged correctness
(installed, `runner-compare` is the same command; it writes compare.md and curves.png into
out=, default outputs/tools/compare/<A>_vs_<B>/)
"""


def cli(argv: list[str] | None = None) -> None:
    """`python -m runner.compare` and the `runner-compare` console command."""
    args = sys.argv[1:] if argv is None else argv
    if "--help" in args or "-h" in args:
        print(HELP, end="")
        return
    from runner.common.io import write_text_atomic
    from runner.evaluation import comparison, group_comparison  # matplotlib and numpy: after --help
    from runner.evaluation.human import is_answers_folder

    out = next((Path(a.split("=", 1)[1]) for a in args if a.startswith("out=")), None)
    operands = [a for a in args if not a.startswith("out=")]
    runs = [Path(a) for a in operands]
    try:
        if len(operands) == 2 and any(map(is_answers_folder, runs)):
            return compare_with_human(runs, out)
        if len(operands) == 2 and any(map(group_comparison.is_group, operands)):
            return compare_groups(operands, out)
        for run in runs:
            if not run.exists():
                raise UserError(f"{run} does not exist. Fix: python -m runner.compare RUN_A RUN_B (run folders or "
                                "their checkpoint files), or a sweep folder")
        if len(runs) == 1 and runs[0].is_dir():
            runs = list(comparison.trials_of(runs[0]))
        if len(runs) != 2:
            raise UserError(f"{len(runs)} folders given. Fix: python -m runner.compare RUN_A RUN_B, or SWEEP_DIR")
        result = comparison.compare(*runs)
        out = out or Path("outputs/tools/compare") / f"{runs[0].stem}_vs_{runs[1].stem}"
        out.mkdir(parents=True, exist_ok=True)
        comparison.curves_png(*runs, out / "curves.png")
        result["gallery"] = comparison.disagreements_png(result, out / "disagreements.png")
        text = comparison.report(result)
        write_text_atomic(out / "compare.md", text)
    except UserError as error:
        print(f"runner.compare: {error}", file=sys.stderr)
        sys.exit(2)
    print(text)
    print(f"written: {out / 'compare.md'} (with curves.png{', disagreements.png' if result['gallery'] else ''})")



def compare_groups(operands: list[str], out: Path | None) -> None:
    """compare GROUP_A GROUP_B: a folder of runs or a quoted glob each (runner/evaluation/group_comparison.py)."""
    from runner.common.io import write_text_atomic
    from runner.evaluation import comparison, group_comparison

    if not all(map(group_comparison.is_group, operands)):
        raise UserError(f"{' and '.join(operands)}: one is a group of runs, the other a single run. Fix: compare a "
                        "group with a group (a folder of runs, or a quoted glob such as 'outputs/exp/*/lr0.1*')")
    result = group_comparison.compare_groups(*operands)
    label_a, label_b = map(group_comparison.folder_label, operands)
    out = out or Path("outputs/tools/compare") / f"{label_a}_vs_{label_b}"
    out.mkdir(parents=True, exist_ok=True)
    comparison.curves_png(result["runs_a"], result["runs_b"], out / "curves.png")
    text = group_comparison.group_report(result)
    write_text_atomic(out / "compare.md", text)
    print(text)
    print(f"written: {out / 'compare.md'} (with curves.png)")


def compare_with_human(operands: list[Path], out: Path | None) -> None:
    """compare ANSWERS RUN (either order): runner.label's human top-1 beside the run's on the same samples."""
    from runner.common.io import write_text_atomic
    from runner.evaluation.human import human_vs_run, is_answers_folder

    answers, run = sorted(operands, key=lambda path: not is_answers_folder(path))
    if is_answers_folder(run):
        raise UserError(f"{answers} and {run} are both answers folders. Fix: python -m runner.compare ANSWERS RUN")
    r = human_vs_run(answers, run)
    text = "\n".join([
        f"# Human against {run} ({r['checkpoint']}, {r['weights']} weights) on the same {r['n']} {r['split']} samples",
        "", "| | top-1 | 95% interval |", "|---|---|---|",
        f"| human ({answers}) | {r['human_top1']:.4f} | {interval(r['human_top1_ci95'])} |",
        f"| model | {r['model_top1']:.4f} | {interval(r['model_top1_ci95'])} |", "",
        f"Model minus human: {r['difference']:+.4f}, paired bootstrap 95% interval {interval(r['difference_ci95'])}.",
        f"Only the human right: {r['only_human_right']}; only the model right: {r['only_model_right']}; "
        f"exact McNemar test p = {r['p_value']:.4g}.", ""])
    out = out or Path("outputs/tools/compare") / f"human_{Path(answers).name}_vs_{Path(run).name}"
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "compare.md", text)
    print(text)
    print(f"written: {out / 'compare.md'}")


def interval(bounds) -> str:
    return f"[{bounds[0]:.4f}, {bounds[1]:.4f}]"

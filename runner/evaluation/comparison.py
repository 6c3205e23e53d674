"""Two runs side by side: `python -m runner.compare RUN_A RUN_B` (or SWEEP_DIR: the best trial and the runner-up;
or a run against an ensemble: `python -m runner.compare STUDENT ENSEMBLE`, the ensemble's summary or its folder).

"Change one thing at a time": the config difference key by key (a warning when more than one
setting changed) and what else differs (code version, torch, device, seed); both best
validation metrics with their intervals; a paired test on the very samples both were evaluated
on (exact McNemar, and a paired bootstrap interval of the accuracy difference), from the
evaluator's saved predictions; per-class changes; both runs' curves in one figure. All of it
goes into compare.md beside the figure.

An ensemble (`python -m runner.evaluate 'ensemble=[...]'`) is paired through the predictions saved
beside its summary (ensemble.val.pt beside ensemble.val.json): its members stand where the config
difference would, and it has no training curve of its own.

Here: the operands' predictions paired and the figures (curves.png: whole-number axes, a lone point a
marker; disagreements.png: samples by file, true class and both predictions, by class name where the
dataset has names); compare.md is comparison_report.py's, what
differs between two runs run_differences.py's, reading an ensemble operand ensemble_operands.py's, two
groups of runs (seeds, folds) group_comparison.py's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from runner.common.errors import UserError  # noqa: E402
from runner.evaluation import predictions, records, results, variants  # noqa: E402
from runner.evaluation.comparison_report import report  # noqa: E402, F401 (compare.md, for the command)
from runner.evaluation.ensemble_operands import ensemble_predictions, ensemble_summary, in_metric_of  # noqa: E402
from runner.evaluation.metric_names import direction  # noqa: E402
from runner.evaluation.paired import bootstrap_difference, mcnemar_exact, per_class_deltas  # noqa: E402
from runner.evaluation.reports import save_png  # noqa: E402
from runner.evaluation.run_differences import config_difference, other_differences, saved_config  # noqa: E402

log = logging.getLogger("runner.compare")
SIDE_COLOURS = {"A": "tab:blue", "B": "tab:orange"}


def run_of(path: Path) -> Path:
    """The run folder of a run folder, or of a checkpoint file in its checkpoints/."""
    return path.parent.parent if path.is_file() else path


def chosen_checkpoint(path: Path) -> dict:
    """What compare reads of a run (its best.json) or of one evaluated checkpoint (its val row, the same shape)."""
    if not path.is_file():
        best = results.read_best(path / "eval")
        if not best:
            raise UserError(f"{path} has no eval/best.json. Fix: python -m runner.evaluate run_dir={path}")
        return best
    name = f"{path.parent.name}/{path.name}"
    # its best row of the run's own evaluation settings (tta=translate for a run that evaluates with it), by top-1
    # among the weights it holds (raw, ema, swa), as the run's best.json is chosen
    run = run_of(path)
    rows = [r for r in results.read_rows(run / "eval") if r["checkpoint"] == name and r["split"] == "val"
            and variants.variant_of(r) == ""]
    if not rows:
        raise UserError(f"{path} has not been evaluated on val. Fix: python -m runner.evaluate checkpoint={path}")
    row = results.best_row(rows, "top1", "max", None, run, variant="")
    if row is None:
        raise UserError(f"{run / 'eval' / 'metrics.jsonl'} has no top-1 for {name}. Fix: python -m "
                        f"runner.evaluate checkpoint={path}")
    return {"checkpoint": name, "epoch": row["epoch"], "metric": "top1", "direction": "max", "value": row["top1"],
            "split": "val", "tta": row["tta"], "weights": results.weights_of(row), "metrics": row}


def operand_predictions(path: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """best_predictions of a run or a checkpoint; ensemble_predictions of an ensemble."""
    summary = ensemble_summary(path)
    return best_predictions(path) if summary is None else ensemble_predictions(summary)


def best_predictions(path: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """(best.json or the checkpoint's row, predicted classes, labels) of a run's best checkpoint or of one checkpoint."""
    best, run = chosen_checkpoint(path), run_of(path)
    log_probs, labels = predictions.load_row_predictions(run / "eval", best)
    return best, log_probs.argmax(dim=1).numpy(), labels.numpy()


def trials_of(sweep: Path) -> tuple[Path, Path]:
    """The best trial of a sweep (or multirun folder) and the runner-up, by their best.json."""
    scored = []
    for path in sorted(sweep.rglob("eval/best.json")):
        try:
            scored.append((results.read_best(path.parent), path.parent.parent))
        except UserError as error:
            log.warning("%s: that trial is left out", error)
    if len(scored) < 2:
        raise UserError(f"{sweep} holds {len(scored)} evaluated run(s); comparing needs two. "
                        "Fix: give two run folders, or a sweep folder with finished trials")
    higher = direction(scored[0][0]["metric"], scored[0][0].get("direction", "auto")) == "max"
    ranked = sorted(scored, key=lambda s: s[0]["value"], reverse=higher)
    return ranked[1][1], ranked[0][1]  # A: the runner-up, B: the best


def compare(a: Path, b: Path) -> dict:
    """Everything compare.md says, as numbers."""
    best_a, predicted_a, labels_a = operand_predictions(a)
    best_b, predicted_b, labels_b = operand_predictions(b)
    best_a = in_metric_of(best_a, best_b) if "ensemble" in best_a else best_a
    best_b = in_metric_of(best_b, best_a) if "ensemble" in best_b else best_b
    if best_a["split"] != best_b["split"] or len(labels_a) != len(labels_b) or (labels_a != labels_b).any():
        raise UserError(f"{a} and {b} were evaluated on different samples ({best_a['split']}: {len(labels_a)}, "
                        f"{best_b['split']}: {len(labels_b)} samples, or other labels): a paired comparison needs "
                        "the same ones. Fix: compare runs of the same dataset and split")
    correct_a, correct_b = predicted_a == labels_a, predicted_b == labels_b
    names = [str(c) for c in range(int(labels_a.max()) + 1)]
    ensembles = "ensemble" in best_a or "ensemble" in best_b  # what differs: the members, not a config
    return {"a": a, "b": b, "best_a": best_a, "best_b": best_b,
            "config": [] if ensembles else config_difference(run_of(a), run_of(b)),
            "other": [] if ensembles else other_differences(run_of(a), run_of(b)),
            "ensembles": {who: best.get("ensemble") or f"the run `{path}` at {best['checkpoint']}"
                          for who, path, best in (("A", a, best_a), ("B", b, best_b))} if ensembles else None,
            "mcnemar": mcnemar_exact(correct_a, correct_b),
            "bootstrap": bootstrap_difference(correct_a, correct_b),
            "classes": per_class_deltas(correct_a, correct_b, labels_a, names),
            "labels": labels_a, "predicted_a": predicted_a, "predicted_b": predicted_b,
            "only_a": np.flatnonzero(correct_a & ~correct_b).tolist(),
            "only_b": np.flatnonzero(~correct_a & correct_b).tolist()}


def training_losses(run: Path) -> tuple[list[int], list[float]]:
    """(step, epoch loss) from the run's TensorBoard events."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    try:
        events.Reload()
    except Exception as error:  # a damaged event file: the curve is left out, the comparison goes on
        log.warning("%s cannot be read (%s: %s): its training curve is left out", run / "tb", type(error).__name__,
                    error)
        return [], []
    if "train/epoch_loss" not in events.Tags().get("scalars", []):
        log.warning("%s holds no training loss (train/epoch_loss; missing or unreadable event files): its training "
                    "curve is left out", run / "tb")
        return [], []
    scalars = events.Scalars("train/epoch_loss")
    return [s.step for s in scalars], [s.value for s in scalars]


def validation_curve(run: Path) -> tuple[str, list[int], list[float]]:
    """(metric, epochs, values) of the run's best weights (raw and ema rows in one line would zigzag)."""
    try:
        best = results.read_best(run / "eval") or {}
    except UserError:
        best = {}
    metric, weights = best.get("metric", "top1"), results.weights_of(best)
    rows = sorted((r for r in results.read_rows(run / "eval") if r["split"] == "val" and variants.variant_of(r) == ""
                   and results.weights_of(r) == weights and records.is_kind(r.get(metric), "number")),
                  key=lambda r: r["epoch"])
    return metric, [r["epoch"] for r in rows], [r[metric] for r in rows]


def curves_png(a, b, path: Path) -> None:
    """Training loss and the validation metric of both sides overlaid; a side is a run (or checkpoint) or a list
    of runs (a group); an ensemble did not train and has no curve."""
    figure, (train, val) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    metric = "top1"
    for side, operand in (("A", a), ("B", b)):
        runs = [run_of(p) for p in (operand if isinstance(operand, list) else [operand]) if ensemble_summary(p) is None]
        for number, run in enumerate(runs):
            label = f"{side}: {run.name}" if len(runs) == 1 else f"{side}: {len(runs)} runs" if number == 0 else None
            style = {"color": SIDE_COLOURS[side], "label": label, "linewidth": 1.5 if len(runs) == 1 else 0.9}
            steps, losses = training_losses(run)
            train.plot(steps, losses, marker="o" if len(steps) < 2 else None, markersize=4, **style)
            metric, epochs, values = validation_curve(run)
            val.plot(epochs, values, marker="o", markersize=4 if len(epochs) < 30 else 2, **style)
    train.set(xlabel="optimizer update", ylabel="training loss (epoch mean)", title="training")
    val.set(xlabel="epoch", ylabel=f"validation {metric}", title="validation (the offline evaluator)")
    for axes in (train, val):
        if not any(len(line.get_xdata()) for line in axes.lines):  # say so rather than draw empty axes
            axes.text(0.5, 0.5, "no curve saved (event files or metrics.jsonl missing)", ha="center",
                      transform=axes.transAxes)
            axes.set_xticks([])
            axes.set_yticks([])
            continue
        low, high = axes.get_xlim()
        if high - low < 2:  # one point: room for whole-number ticks around it, not 6.64 ... 7.36
            middle = round((low + high) / 2)
            axes.set_xlim(middle - 1, middle + 1)
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))  # updates and epochs are whole numbers
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=8)
    save_png(figure, path)


def sample_names(dataset, count: int) -> list[str]:
    """Each sample's file name where the dataset reads files, else "#index"."""
    from runner.data.image_files import image_files

    files = image_files(dataset)
    return [files[i].name for i in range(count)] if files and len(files) >= count else [f"#{i}" for i in range(count)]


def disagreements_png(result: dict, path: Path, per_row: int = 8) -> bool:
    """The samples only A gets right (top row) and only B gets right (bottom), as the model saw them, each with
    its file, true class and both predictions; the dataset's class and sample names go into result for
    compare.md (class_names, sample_names).

    The images come from the split as B's run built it: only runner's own datasets, or a custom
    one whose module is trusted (see runner/common/trust.py); otherwise no figure (False).
    """
    from runner.common.trust import require_trusted
    from runner.data.introspect import class_names
    from runner.data.transforms import channel_stats, denormalize
    from runner.evaluation.saved_splits import split_dataset

    shown = next((path for path in (result["b"], result["a"]) if ensemble_summary(path) is None), None)
    if shown is None:  # two ensembles: no run to build the split from
        return False
    config = saved_config(run_of(shown))  # resolved: .hydra/config.yaml keeps its interpolations
    try:
        require_trusted(config, [], source=str(shown))
        dataset, dataset_cfg = split_dataset(config, result["best_b"]["split"], None)
    except UserError:
        return False
    if not (result["only_a"] or result["only_b"]):  # a line that says so, not an empty page
        figure = plt.figure(figsize=(6, 0.8))
        figure.text(0.5, 0.5, f"A and B agree on every one of the {len(result['labels'])} samples", ha="center")
        save_png(figure, path)
        return True
    per_row = min(per_row, max(len(result["only_a"]), len(result["only_b"])))  # no blank columns
    mean, std = channel_stats(dataset_cfg)
    names = result["class_names"] = class_names(dataset, int(dataset_cfg.num_classes))
    files = result["sample_names"] = sample_names(dataset, len(dataset))
    figure, axes = plt.subplots(2, per_row, figsize=(1.9 * per_row, 5), squeeze=False, layout="constrained")
    for row, key in enumerate(("only_a", "only_b")):
        for column in range(per_row):
            axis = axes[row][column]
            axis.axis("off")
            if column < len(result[key]):
                index = result[key][column]
                image = denormalize(dataset[index][0], mean, std).permute(1, 2, 0).numpy()
                axis.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=1)
                true, said_a, said_b = (names[int(c)] for c in (result["labels"][index], result["predicted_a"][index],
                                                                result["predicted_b"][index]))
                axis.set_title(f"{files[index]}\ntrue: {true}\nA: {said_a}  B: {said_b}", fontsize=7)
    figure.suptitle(f"only A right (top row, {len(result['only_a'])} samples) and only B right (bottom row, "
                    f"{len(result['only_b'])})", fontsize=9)
    save_png(figure, path)
    return True

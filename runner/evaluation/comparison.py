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

Here: the operands' predictions paired, the figures and compare.md; what differs between two runs is
run_differences.py's, reading an ensemble operand ensemble_operands.py's.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from runner.common.errors import UserError  # noqa: E402
from runner.evaluation import predictions, records, results, variants  # noqa: E402
from runner.evaluation.ensemble_operands import ensemble_predictions, ensemble_summary, in_metric_of  # noqa: E402
from runner.evaluation.metric_names import direction  # noqa: E402
from runner.evaluation.paired import bootstrap_difference, mcnemar_exact, per_class_deltas  # noqa: E402
from runner.evaluation.reports import save_png  # noqa: E402
from runner.evaluation.run_differences import config_difference, other_differences, saved_config  # noqa: E402

log = logging.getLogger("runner.compare")

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


def curves_png(a: Path, b: Path, path: Path) -> None:
    """Training loss and the validation metric of both runs, overlaid."""
    figure, (train, val) = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for operand, label in ((a, "A"), (b, "B")):
        if ensemble_summary(operand) is not None:
            continue  # an ensemble did not train: no curve of its own
        run = run_of(operand)
        steps, losses = training_losses(run)
        train.plot(steps, losses, label=f"{label}: {run.name}")
        try:
            best = results.read_best(run / "eval") or {}
        except UserError:
            best = {}
        metric, weights = best.get("metric", "top1"), results.weights_of(best)
        # one line of one weights (the best's): raw and ema rows in one line would zigzag between them
        rows = sorted((r for r in results.read_rows(run / "eval") if r["split"] == "val" and variants.variant_of(r) == ""
                       and results.weights_of(r) == weights and records.is_kind(r.get(metric), "number")),
                      key=lambda r: r["epoch"])
        val.plot([r["epoch"] for r in rows], [r[metric] for r in rows], marker="o", label=f"{label}: {run.name}")
        val.set_ylabel(f"validation {metric}")
    train.set(xlabel="optimizer update", ylabel="training loss (epoch mean)", title="training")
    val.set(xlabel="epoch", title="validation (the offline evaluator)")
    for axes in (train, val):
        axes.legend(fontsize=8)
    save_png(figure, path)


def disagreements_png(result: dict, path: Path, per_row: int = 8) -> bool:
    """The samples only A gets right (top row) and only B gets right (bottom), as the model saw them.

    The images come from the split as B's run built it: only runner's own datasets, or a custom
    one whose module is trusted (see runner/common/trust.py); otherwise no figure (False).
    """
    from runner.common.trust import require_trusted
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
    mean, std = channel_stats(dataset_cfg)
    figure, axes = plt.subplots(2, per_row, figsize=(1.6 * per_row, 4), squeeze=False, layout="constrained")
    for row, (key, who) in enumerate((("only_a", "A"), ("only_b", "B"))):
        for column in range(per_row):
            axis = axes[row][column]
            axis.axis("off")
            if column < len(result[key]):
                index = result[key][column]
                image = denormalize(dataset[index][0], mean, std).permute(1, 2, 0).numpy()
                axis.imshow(image[..., 0] if image.shape[2] == 1 else image, cmap="gray", vmin=0, vmax=1)
                axis.set_title(f"#{index}: only {who} right", fontsize=7)
    figure.suptitle(f"samples one run gets right and the other wrong ({len(result['only_a'])} only A, "
                    f"{len(result['only_b'])} only B)", fontsize=9)
    save_png(figure, path)
    return True


def report(result: dict) -> str:
    """compare.md."""
    a, b, best_a, best_b = result["a"], result["b"], result["best_a"], result["best_b"]
    metric = best_a["metric"]
    lines = [f"# {b.name} (B) against {a.name} (A)", "", f"- A: `{a}`", f"- B: `{b}`", "", "## What differs", ""]
    changed = result["config"]
    if result.get("ensembles"):  # an ensemble has members, not a config of its own
        lines += [f"- {who}: {described}" for who, described in result["ensembles"].items()]
    else:
        if len(changed) > 1:
            lines += [f"**{len(changed)} settings changed: change one thing at a time**, or the difference below "
                      "cannot be put down to any one of them.", ""]
        lines += ["| setting | A | B |", "| --- | --- | --- |", *(f"| {k} | {va} | {vb} |" for k, va, vb in changed)]
    lines += ["", *(f"- {k}: {va} -> {vb}" for k, va, vb in result["other"])]
    mc, boot = result["mcnemar"], result["bootstrap"]

    def interval(best):
        ci = best["metrics"].get("top1_ci95") or []
        ci = ci if len(ci) == 2 else [float("nan")] * 2
        return f"{best['value']:.4f} (top-1 95% interval [{ci[0]:.4f}, {ci[1]:.4f}])"
    verdict = "B is better" if boot["ci95"][0] > 0 else "A is better" if boot["ci95"][1] < 0 else \
        "no difference shown"
    def at(best):  # the weights where they are averaged ones: "checkpoints/epoch-0003.pt (ema)"
        weights = results.weights_of(best)
        return best["checkpoint"] + ("" if weights == "raw" else f" ({weights})")
    lines += ["", f"## Best validation {metric}", "", f"- A: {interval(best_a)} at {at(best_a)}",
              f"- B: {interval(best_b)} at {at(best_b)}", "",
              f"## Paired, on the same {best_a['metrics'].get('n', '?')} {best_a['split']} samples", "",
              f"- only A right: {mc['only_a_right']}, only B right: {mc['only_b_right']}; exact McNemar p = "
              f"{mc['p_value']:.4g}",
              f"- top-1 of B minus A: {boot['difference']:+.4f}, paired bootstrap 95% interval "
              f"[{boot['ci95'][0]:+.4f}, {boot['ci95'][1]:+.4f}] ({boot['resamples']} resamples): **{verdict}**",
              "", "## Classes that changed most", "", "| class | samples | A | B | change |",
              "| --- | --- | --- | --- | --- |",
              *(f"| {r['class']} | {r['n']} | {r['a']:.3f} | {r['b']:.3f} | {r['delta']:+.3f} |"
                for r in result["classes"][:15]),
              "", f"Samples only A gets right: {result['only_a'][:50]}",
              f"Samples only B gets right: {result['only_b'][:50]}", "", "![curves](curves.png)", "",
              "![disagreements](disagreements.png)" if result.get("gallery") else "", ""]
    return "\n".join(lines)

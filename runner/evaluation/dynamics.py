"""python -m runner.evaluate run_dir=RUN: eval/dynamics.png and eval/dynamics.csv, how the predictions moved.

"Visualize prediction dynamics on a fixed test batch: if the model wiggles too much it is unstable."
Drawn from the log-probabilities the evaluator saved (eval/predictions/) for each checkpoint of the
run's own evaluation settings (raw weights, the validation split), and for each light checkpoint
of `checkpoint.every_updates` (checkpoints/updates/update-NNNNNNNN.pt, predicted for this figure
alone, under eval/predictions/updates/): above, the probability of its true class for a fixed,
seeded, class-balanced set of up to 32 validation samples (chosen from the labels alone, so every
evaluation picks the same ones), flips between right and wrong marked; below, the wiggle: the share
of the whole split whose predicted class changed since the previous checkpoint. The same figure
goes to TensorBoard as the image eval/dynamics at each newly evaluated checkpoint's step (at most
20 an evaluation, evenly spread: watch=true adds one a checkpoint).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed, on a cluster node or in CI
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from runner.common.errors import UserError, one_line  # noqa: E402
from runner.common.io import write_csv_atomic  # noqa: E402
from runner.evaluation import predictions, results  # noqa: E402
from runner.evaluation.reports import save_png  # noqa: E402
from runner.evaluation.variants import row_settings, variant_of  # noqa: E402

log = logging.getLogger("runner.evaluate")

FIXED_SAMPLES, FIXED_SEED = 32, 0
MOST_IMAGES = 20  # TensorBoard images per evaluation (one per newly evaluated checkpoint up to this)
LIGHT_NAME = re.compile(r"^update-(\d{8})\.pt$")  # checkpoint.every_updates' light checkpoints


@dataclass
class Point:
    """One evaluated checkpoint: its predicted class for every sample, its true-class probability for the set."""
    checkpoint: str
    step: int
    predicted: torch.Tensor
    p_true: torch.Tensor


def fixed_samples(labels: torch.Tensor, size: int = FIXED_SAMPLES, seed: int = FIXED_SEED) -> list[int]:
    """Up to `size` sample indices, balanced over the classes (round robin over a seeded shuffle of each class),
    in class order: from the labels alone, so every evaluation of the split picks the same ones."""
    generator = torch.Generator().manual_seed(seed)
    queues = []
    for cls in sorted(set(labels.tolist())):
        members = (labels == cls).nonzero().flatten()
        queues.append(members[torch.randperm(len(members), generator=generator)].tolist())
    chosen: list[int] = []
    while len(chosen) < min(size, len(labels)):
        for queue in queues:
            if queue and len(chosen) < size:
                chosen.append(queue.pop(0))
    return sorted(chosen, key=lambda i: (int(labels[i]), i))


def own_rows(rows: list[dict]) -> list[dict]:
    """The rows the figure draws: validation, raw weights, the run's own evaluation settings; by update."""
    own = [r for r in rows if r["split"] == "val" and r["weights"] == "raw" and variant_of(r) == ""]
    return sorted(own, key=lambda r: (r.get("global_step") or 0, r["epoch"]))


def light_checkpoints(run_dir: Path) -> list[Path]:
    """checkpoints/updates/update-NNNNNNNN.pt, by update (temporary files are never listed)."""
    folder = Path(run_dir) / "checkpoints" / "updates"
    found = [p for p in folder.iterdir() if LIGHT_NAME.match(p.name)] if folder.is_dir() else []
    return sorted(found, key=lambda p: p.name)


def light_pending(run_dir: Path, key: tuple) -> list[Path]:
    """The light checkpoints without predictions of the run's own settings, for an evaluation with settings `key`:
    none when the key is not the run's own (an exploratory evaluation) or the run's own is not known yet."""
    eval_dir = results.eval_dir_of(run_dir)
    own = own_rows(results.read_rows(eval_dir))
    if not own or row_settings(own[-1]) != key:
        return []
    return [p for p in light_checkpoints(run_dir) if results.inside_run(run_dir, f"checkpoints/updates/{p.name}")
            and not predictions.predictions_path(eval_dir, f"checkpoints/updates/{p.name}", "val", *key).exists()]


def missing(run_dir: Path) -> bool:
    return not (results.eval_dir_of(run_dir) / "dynamics.png").exists()


def behind(run_dir: Path, key: tuple) -> bool:
    """Whether an evaluation with settings `key` has dynamics work left: light checkpoints to predict, or the
    figure missing while the run's own settings have a validation row."""
    return bool(light_pending(run_dir, key)) or (missing(run_dir) and bool(own_rows(results.read_rows(
        results.eval_dir_of(run_dir)))))


def light_points(eval_dir: Path, key: tuple) -> list[tuple[str, int, Path]]:
    """(checkpoint, step, predictions file) of each light checkpoint predicted with the settings `key` (its
    predictions stay when its checkpoint is deleted by the light checkpoints' retention)."""
    folder = eval_dir / "predictions" / "updates"
    found = []
    for path in sorted(folder.glob("update-*.pt")) if folder.is_dir() else []:
        step = path.name[len("update-"):].split(".", 1)[0]
        name = f"checkpoints/updates/update-{step}.pt"
        if step.isdigit() and predictions.predictions_path(eval_dir, name, "val", *key) == path:
            found.append((name, int(step), path))
    return found


def load_points(run_dir: Path) -> tuple[list[Point], torch.Tensor, list[int]] | None:
    """Every point of the figure by update (a full checkpoint where a light one has the same update), the split's
    labels and the fixed set; None before the run's own settings have a validation row."""
    eval_dir = results.eval_dir_of(run_dir)
    own = own_rows(results.read_rows(eval_dir))
    if not own:
        return None
    files = {r.get("global_step") or 0: (r["checkpoint"], predictions.predictions_of(eval_dir, r)) for r in own}
    for name, step, path in light_points(eval_dir, row_settings(own[-1])):
        files.setdefault(step, (name, path))
    points, labels, fixed = [], None, []
    for step in sorted(files):
        name, path = files[step]
        try:
            log_probs, its_labels = predictions.load_predictions_file(path, run_dir)
        except UserError as error:
            log.warning("dynamics: %s: left out", one_line(error))
            continue
        if labels is None:
            labels, fixed = its_labels, fixed_samples(its_labels)
        elif not torch.equal(its_labels, labels):
            log.warning("dynamics: %s holds other labels than the split's first checkpoint: left out", path)
            continue
        p_true = log_probs[fixed].gather(1, labels[fixed, None]).squeeze(1).exp()
        points.append(Point(name, step, log_probs.argmax(dim=1), p_true))
    return (points, labels, fixed) if points else None


def numbers(points: list[Point], labels: torch.Tensor, fixed: list[int]) -> list[dict]:
    """Per point: the wiggle (share of the split whose predicted class changed since the previous point), the flips
    (samples of the fixed set gone from right to wrong or back) and how many of the set are right."""
    rows, previous = [], None
    for point in points:
        right = point.predicted[fixed] == labels[fixed]
        row = {"checkpoint": point.checkpoint, "step": point.step, "wiggle": None, "flips": None,
               "right": int(right.sum())}
        if previous is not None:
            row["wiggle"] = round(float((point.predicted != previous.predicted).float().mean()), 6)
            row["flips"] = int((right != (previous.predicted[fixed] == labels[fixed])).sum())
        rows.append(row)
        previous = point
    return rows


def write(run_dir: Path, writer, new_steps: list[int] = ()) -> list[dict] | None:
    """eval/dynamics.png and .csv, and the figure as far as each of new_steps as TensorBoard's eval/dynamics at
    that step; returns the csv's rows (None before there is a validation row of the run's own settings)."""
    loaded = load_points(run_dir)
    if loaded is None:
        return None
    points, labels, fixed = loaded
    table = numbers(points, labels, fixed)
    eval_dir = results.eval_dir_of(run_dir)
    columns = ["checkpoint", "step", "wiggle", "flips", "right"]
    write_csv_atomic(eval_dir / "dynamics.csv", columns,
                     [["" if r[c] is None else r[c] for c in columns] for r in table])
    save_png(figure(points, labels, fixed, table), eval_dir / "dynamics.png")
    for step in thinned(sorted(set(new_steps))) if writer is not None else []:
        shown = [i for i, p in enumerate(points) if p.step <= step]
        if shown:
            writer.add_figure("eval/dynamics", figure([points[i] for i in shown], labels, fixed,
                                                      [table[i] for i in shown]), global_step=step)  # closes it
    if writer is not None:
        writer.flush()
    return table


def thinned(steps: list[int], most: int = MOST_IMAGES) -> list[int]:
    """At most `most` of the steps, evenly spread, the last one kept: a figure costs about 0.4 s to draw."""
    if len(steps) <= most:
        return steps
    return [steps[round(i * (len(steps) - 1) / (most - 1))] for i in range(most)]


def figure(points: list[Point], labels: torch.Tensor, fixed: list[int], table: list[dict]):
    """Above: each fixed sample's true-class probability per point (a row of cells), flips marked; below: wiggle."""
    steps = [p.step for p in points]
    edges = cell_edges(steps)
    p_true = torch.stack([p.p_true for p in points], dim=1).numpy()  # (samples, points)
    height = 2.6 + 0.16 * max(len(fixed), 4)  # fixed margins, not a layout engine: drawn at every checkpoint
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, height), sharex=True,
                                         height_ratios=[max(len(fixed), 4) * 0.16 + 0.4, 1.2])
    figure.subplots_adjust(left=0.1, right=0.88, top=1 - 0.55 / height, bottom=0.45 / height, hspace=0.85 / height * 2)
    mesh = top.pcolormesh(edges, range(len(fixed) + 1), p_true, cmap="RdYlGn", vmin=0, vmax=1)
    figure.colorbar(mesh, cax=figure.add_axes((0.9, top.get_position().y0, 0.015, top.get_position().height)),
                    label="p(true class)")
    right = torch.stack([p.predicted[fixed] == labels[fixed] for p in points], dim=1)
    changed = (right[:, 1:] != right[:, :-1]).nonzero().tolist()  # (sample, point - 1)
    for won, marker, colour in ((True, "^", "black"), (False, "v", "white")):
        at = [(steps[k + 1], row + 0.5) for row, k in changed if bool(right[row, k + 1]) == won]
        top.plot([x for x, _ in at], [y for _, y in at], marker=marker, color=colour, markersize=5,
                 markeredgecolor="black", linestyle="none")
    top.set_yticks([i + 0.5 for i in range(len(fixed))], [f"#{i} ({int(labels[i])})" for i in fixed], fontsize=6)
    top.invert_yaxis()
    flips = sum(r["flips"] or 0 for r in table)
    top.set_title(f"the true class's probability of {len(fixed)} fixed validation samples (class-balanced, seed "
                  f"{FIXED_SEED}; label in brackets) over {len(points)} checkpoints;\n{flips} flips between right and "
                  "wrong (^ became right, v became wrong)", fontsize=9)
    wiggle = [(r["step"], r["wiggle"]) for r in table if r["wiggle"] is not None]
    bottom.plot([s for s, _ in wiggle], [w for _, w in wiggle], marker="o", markersize=3)
    bottom.set_ylim(0, max([w for _, w in wiggle] + [0.05]) * 1.15)
    bottom.set_ylabel("wiggle")
    bottom.set_xlabel("update (optimizer step)")
    bottom.set_title(f"wiggle: the share of all {len(labels)} validation samples whose predicted class changed "
                     "since the previous checkpoint", fontsize=9)
    bottom.grid(alpha=0.3)
    return figure


def cell_edges(steps: list[int]) -> list[float]:
    """Cell edges halfway between the points' updates, so that each cell is centred on its update."""
    if len(steps) == 1:
        return [steps[0] - 0.5, steps[0] + 0.5]
    middles = [(a + b) / 2 for a, b in zip(steps, steps[1:], strict=False)]
    return [2 * steps[0] - middles[0], *middles, 2 * steps[-1] - middles[-1]]

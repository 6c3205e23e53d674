"""python -m runner.label +experiment=flowers split=val n=100: the human baseline's answers, its score, and the
same samples' score of a run (paired).

An answers folder (outputs/labels/<dataset>_<split>_n<n>_seed<seed>/) holds manifest.json (which
samples, in the order shown, with their true labels and the class names) and answers.jsonl, one
line per answer as it is given (append-only: a killed server loses nothing, a torn last line is
skipped). A sample's first answer is its answer. human_top1 scores the answered samples with a
Wilson 95% interval; human_vs_run puts a run's best checkpoint beside the human on those very
samples, from the evaluator's saved predictions, with the exact McNemar test and a paired
bootstrap interval of the difference (runner/evaluation/paired.py, as runner.compare pairs two runs).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from runner.common.errors import UserError
from runner.common.io import append_line, read_jsonl, write_json_atomic
from runner.evaluation import predictions, results, variants
from runner.evaluation.metrics import wilson_interval
from runner.evaluation.paired import bootstrap_difference, mcnemar_exact

MANIFEST, ANSWERS = "manifest.json", "answers.jsonl"


def choose_samples(labels: Sequence[int], n: int, seed: int) -> list[int]:
    """n indices of a split: as many of each class as possible (round-robin over a seeded shuffle, as
    dataset.subset takes its miniature), shown in a seeded random order (a split stored class by class, or
    the classes in turns, would give the answer away)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels)).tolist()
    taken: dict[int, int] = {}
    ranked = []  # (how many of its class came before it in the shuffle, its place in the shuffle, index)
    for place, index in enumerate(order):
        rank = taken.get(int(labels[index]), 0)
        taken[int(labels[index])] = rank + 1
        ranked.append((rank, place, index))
    chosen = [index for _, _, index in sorted(ranked)[:n]]
    return [chosen[k] for k in rng.permutation(len(chosen))]


def reference_examples(labels: Sequence[int], num_classes: int, count: int, seed: int) -> list[list[int]]:
    """Per class, up to `count` training samples to show beside the class name (a seeded choice)."""
    chosen: list[list[int]] = [[] for _ in range(num_classes)]
    for index in np.random.default_rng(seed).permutation(len(labels)).tolist():
        if 0 <= int(labels[index]) < num_classes and len(chosen[int(labels[index])]) < count:
            chosen[int(labels[index])].append(index)
    return chosen


def answers_folder(dataset: str, split: str, n: int, seed: int) -> Path:
    """Where the answers to `n` samples of a dataset's split go by default (one folder per choice of samples)."""
    return Path("outputs") / "labels" / f"{dataset}_{split}_n{n}_seed{seed}"


def is_answers_folder(path: Path) -> bool:
    """Whether a path runner.runs or runner.compare was given is runner.label's answers folder (not a run)."""
    return (Path(path) / MANIFEST).is_file() and not (Path(path) / "eval").exists()


def open_answers(folder: Path, manifest: dict) -> None:
    """Start an answers folder with its manifest, or go on with one whose manifest names the same samples."""
    folder = Path(folder)
    if (folder / MANIFEST).exists():
        held = read_manifest(folder)
        if held["samples"] != manifest["samples"] or held["split_size"] != manifest["split_size"]:
            raise UserError(f"{folder} holds answers to other samples (another dataset root, subset or split "
                            f"than {manifest['dataset']} {manifest['split']} now has). Fix: answers=ANOTHER_FOLDER "
                            "for these samples, or the settings those answers were given with")
        return
    folder.mkdir(parents=True, exist_ok=True)
    write_json_atomic(folder / MANIFEST, manifest)


def read_manifest(folder: Path) -> dict:
    path = Path(folder) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
        manifest["samples"][0]["label"], manifest["classes"][0], manifest["split_size"]  # noqa: B018 (its shape)
    except FileNotFoundError:
        raise UserError(f"{path} is missing: {folder} is not an answers folder. Fix: give the folder "
                        "python -m runner.label printed (outputs/labels/...)") from None
    except (ValueError, KeyError, IndexError, TypeError) as error:
        raise UserError(f"{path} is not a manifest runner.label wrote ({type(error).__name__}: {error}). "
                        "Fix: label into a new folder (answers=NEW_FOLDER)") from None
    return manifest


def read_answers(folder: Path) -> dict[int, int]:
    """{position shown: the class answered}, each sample's first answer; torn or stray lines are skipped."""
    n = len(read_manifest(folder)["samples"])
    answers: dict[int, int] = {}
    for record in read_jsonl(Path(folder) / ANSWERS):
        position, answer = record.get("sample"), record.get("answer")
        if isinstance(position, int) and isinstance(answer, int) and 0 <= position < n:
            answers.setdefault(position, answer)
    return answers


def next_unanswered(folder: Path) -> int | None:
    """The first sample (in the order shown) without an answer; None when every one has one."""
    answers, n = read_answers(folder), len(read_manifest(folder)["samples"])
    return next((k for k in range(n) if k not in answers), None)


def record_answer(folder: Path, position: int, answer: int) -> None:
    """Append one answer as one whole line (fsynced): the answer to the sample shown at `position`."""
    manifest = read_manifest(folder)
    if not 0 <= position < len(manifest["samples"]):
        raise UserError(f"there is no sample {position} (0..{len(manifest['samples']) - 1}). Fix: reload the page")
    if not 0 <= answer < len(manifest["classes"]):
        raise UserError(f"answer {answer} is not a class (0..{len(manifest['classes']) - 1}). Fix: pick a listed class")
    if position in read_answers(folder):
        raise UserError(f"sample {position} is already answered; the first answer counts. Fix: reload the page")
    sample = manifest["samples"][position]
    append_line(Path(folder) / ANSWERS, json.dumps({"sample": position, "index": sample["index"], "answer": answer,
                                                    "time": time.strftime("%Y-%m-%dT%H:%M:%S")}))


def answered_correct(folder: Path) -> tuple[list[int], np.ndarray]:
    """(the answered positions, whether each answer is the true label)."""
    samples, answers = read_manifest(folder)["samples"], read_answers(folder)
    positions = sorted(answers)
    return positions, np.array([answers[k] == samples[k]["label"] for k in positions], dtype=bool)


def human_top1(folder: Path) -> dict:
    """Top-1 of the answers given so far, with its Wilson 95% interval."""
    positions, correct = answered_correct(folder)
    k, answered = int(correct.sum()), len(positions)
    return {"n": len(read_manifest(folder)["samples"]), "answered": answered, "correct": k,
            "top1": k / answered if answered else None, "top1_ci95": list(wilson_interval(k, answered))}


def run_predictions(run_dir: Path, split: str) -> tuple[dict, np.ndarray, np.ndarray]:
    """(the row, predicted classes, labels) of a run's best checkpoint on `split`: its best.json's row on val, the
    same checkpoint and weights' row on test (the evaluator's test look)."""
    eval_dir = Path(run_dir) / "eval"
    best = results.read_best(eval_dir)
    if not best:
        raise UserError(f"{run_dir} has no eval/best.json. Fix: python -m runner.evaluate run_dir={run_dir}")
    row = best["metrics"] if best.get("split") == split else next(
        (r for r in results.read_rows(eval_dir) if r["checkpoint"] == best["checkpoint"] and r["split"] == split
         and results.weights_of(r) == results.weights_of(best) and variants.variant_of(r) == ""), None)
    if row is None:
        raise UserError(f"{run_dir}'s best checkpoint ({best['checkpoint']}) has no {split} predictions. "
                        f"Fix: python -m runner.evaluate run_dir={run_dir} split={split}")
    log_probs, labels = predictions.load_row_predictions(eval_dir, row)
    return row, log_probs.argmax(dim=1).numpy(), labels.numpy()


def human_vs_run(folder: Path, run_dir: Path) -> dict:
    """"human top-1 on these N" beside the run's best checkpoint on the same answered samples: both top-1 with
    their intervals, the exact McNemar test and the model-minus-human difference with a paired bootstrap interval."""
    manifest = read_manifest(folder)
    row, predicted, labels = run_predictions(run_dir, manifest["split"])
    indices = np.array([s["index"] for s in manifest["samples"]], dtype=int)
    if len(labels) != manifest["split_size"] or (labels[indices] != [s["label"] for s in manifest["samples"]]).any():
        raise UserError(f"{run_dir} was evaluated on other samples than the answers in {folder} ({len(labels)} "
                        f"{manifest['split']} samples, not {manifest['split_size']}, or other labels). Fix: compare "
                        "with a run of the same dataset and split")
    positions, human_correct = answered_correct(folder)
    if not positions:
        raise UserError(f"{folder} holds no answers yet. Fix: python -m runner.label ... answers={folder}")
    model_correct = predicted[indices[positions]] == labels[indices[positions]]
    n, mcnemar = len(positions), mcnemar_exact(human_correct, model_correct)
    boot = bootstrap_difference(human_correct, model_correct)
    k_human, k_model = int(human_correct.sum()), int(model_correct.sum())
    return {"answers": str(folder), "run": str(run_dir), "split": manifest["split"], "n": n,
            "checkpoint": row["checkpoint"], "weights": results.weights_of(row),
            "human_top1": k_human / n, "human_top1_ci95": list(wilson_interval(k_human, n)),
            "model_top1": k_model / n, "model_top1_ci95": list(wilson_interval(k_model, n)),
            "only_human_right": mcnemar["only_a_right"], "only_model_right": mcnemar["only_b_right"],
            "p_value": mcnemar["p_value"], "difference": boot["difference"], "difference_ci95": boot["ci95"]}


def human_rows(root: Path) -> list[dict]:
    """runner.runs' rows for the answers folders below root: "human top-1 on these N" beside the runs (the
    paired comparison with one run is `python -m runner.compare ANSWERS RUN`)."""
    rows = []
    for folder in sorted(path.parent for path in Path(root).rglob(MANIFEST) if is_answers_folder(path.parent)):
        manifest, score = read_manifest(folder), human_top1(folder)
        low, high = score["top1_ci95"]
        rows.append({"start": "-", "git": "-", "overrides": "-", "epochs": "-", "checkpoint": "-",  # every column
                     "name": "human", "run": str(folder.relative_to(root)),
                     "status": f"labelled {score['answered']}/{score['n']}", "metric": "top1", "best": score["top1"],
                     "ci95": f"[{low:.4f}, {high:.4f}]" if score["answered"] else "-",
                     "other": f"on {score['answered']} {manifest['dataset']} {manifest['split']} samples; "
                              f"paired with a run: python -m runner.compare {folder} RUN",
                     "_where": {}, "_config": {}, "_metric": "top1", "_overrides": [], "_shown": []})
    return rows

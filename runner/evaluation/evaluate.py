"""python -m runner.evaluate run_dir=outputs/<run> [split=val|test] [watch=true] [tta=flip] [checkpoint=PATH]

The offline evaluator: every checkpoint of a run that has not been evaluated yet, on the whole
split, in eval mode, with the model and data built from the checkpoint's own saved config (not
from today's conf/). Results go into the run's `eval/`:

    metrics.jsonl, metrics.csv   one row per checkpoint, split and tta
    best.json                    the best checkpoint by `metric` (early stopping after the fact)
    predictions/                 per-checkpoint log-probabilities (for ensembles and figures)
    confusion_matrix.png/.csv, gallery_{min,q25,median,q75,max}.png   for the best checkpoint
    test_ledger.jsonl            every look at the test split
    evaluate.log

and to the run's TensorBoard logs under eval/ at each checkpoint's global step.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from runner import checkpoint_files, models
from runner.data import datasets, introspect, loaders, transforms
from runner.errors import UserError
from runner.evaluation import metrics
from runner.io import exclusive
from runner.provenance import now
from runner.runtime import autocast_dtype, pick_device

log = logging.getLogger("runner.evaluate")  # also when run as __main__

SCALARS = ("loss", "top1", "top5", "balanced_accuracy", "ece")
TABLE = ("loss", "top1", "top5", "balanced_accuracy")


# ---------------------------------------------------------------------------------------------
# one checkpoint


def build_model(config: dict, state: dict, path: Path, device: torch.device) -> torch.nn.Module:
    """The checkpoint's model, from its own config, in eval mode."""
    model_cfg = OmegaConf.create(config["model"])
    if "pretrained" in model_cfg:  # the checkpoint holds every weight: download nothing
        model_cfg.pretrained, model_cfg.weights_path = False, None
    model_cfg.init_output_bias = "none"  # and the bias too
    model = models.build(model_cfg)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise UserError(f"{path} does not fit the model of its config ({model_cfg._target_}): {first}. "
                        "Fix: evaluate it with the run that wrote it") from None
    return model.to(device).eval()


def split_dataset(config: dict, split: str, data_root: str | None):
    """The split as the run built it, from the checkpoint's dataset config (root overridable)."""
    dataset_cfg = OmegaConf.create(config["dataset"])
    if data_root is not None:
        dataset_cfg.root = data_root
    if split not in datasets.SPLITS:
        raise UserError(f"split={split!r} is not a split. Fix: split=val or split=test")
    dataset = datasets.build_splits(dataset_cfg)[split]
    if len(dataset) == 0:
        raise UserError(f"dataset {dataset_cfg.name} has no {split} split here. Fix: split=val")
    return dataset, dataset_cfg


def assert_eval_mode(model: torch.nn.Module) -> None:
    """Dropout and BatchNorm behave differently in training mode: refuse to evaluate in it."""
    training = [name or "(model)" for name, module in model.named_modules() if module.training]
    if training:
        raise RuntimeError(f"the model is in training mode ({', '.join(training[:3])}): call model.eval() first")


@torch.inference_mode()
def predict(model, loader, device: torch.device, amp_dtype, tta: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probabilities and labels of every sample of the loader, exactly once each."""
    assert_eval_mode(model)
    log_probs, labels = [], []
    for x, y in loader:
        x = x.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out = model(x).float().log_softmax(dim=1)
            if tta == "flip":  # the mean of the two probabilities, in log space
                mirrored = model(x.flip(-1)).float().log_softmax(dim=1)
                out = torch.logaddexp(out, mirrored) - math.log(2)
        log_probs.append(out.cpu())
        labels.append(torch.as_tensor(y))
    return torch.cat(log_probs), torch.cat(labels).long()


# ---------------------------------------------------------------------------------------------
# the run's eval/ folder


def run_directory(settings: DictConfig) -> Path:
    """The run to evaluate: run_dir, or the run that holds checkpoint=PATH."""
    if settings.get("checkpoint"):
        path = Path(settings.checkpoint)
        if not path.is_file():
            raise UserError(f"checkpoint={settings.checkpoint} does not exist. Fix: give a checkpoints/epoch-NNNN.pt file")
        return Path(settings.run_dir) if settings.get("run_dir") else (
            path.parent.parent if path.parent.name == "checkpoints" else path.parent)
    if not settings.get("run_dir"):
        raise UserError("no run to evaluate. Fix: run_dir=outputs/<name>/<time> (or checkpoint=FILE)")
    run_dir = Path(settings.run_dir)
    if not run_dir.is_dir() or not ((run_dir / "checkpoints").is_dir() or (run_dir / ".hydra").is_dir()):
        raise UserError(f"run_dir={settings.run_dir} is not a run directory (no checkpoints/ or .hydra/ in it). "
                        "Fix: run_dir=outputs/<name>/<time>, a folder that `python -m runner` printed")
    return run_dir


def find_row(run_dir: Path, checkpoint_name: str, split: str, tta: str) -> dict | None:
    for row in read_rows(run_dir / "eval"):
        if (row["checkpoint"], row["split"], row["tta"]) == (checkpoint_name, split, tta):
            return row
    return None


def read_rows(eval_dir: Path) -> list[dict]:
    path = eval_dir / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_row(eval_dir: Path, row: dict) -> None:
    """One row to metrics.jsonl (every field) and metrics.csv (the scalars)."""
    with open(eval_dir / "metrics.jsonl", "a") as file:
        file.write(json.dumps(row) + "\n")
    columns = ["checkpoint", "epoch", "global_step", "split", "tta", "n", *SCALARS, "top1_ci_low", "top1_ci_high"]
    csv_path = eval_dir / "metrics.csv"
    new = not csv_path.exists()
    with open(csv_path, "a", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)


def locked(eval_dir: Path):
    """One evaluator at a time per run (a watcher and the training run's own evaluation)."""
    return exclusive(eval_dir / ".lock")


@contextlib.contextmanager
def log_file(path: Path):
    """Also log into the run's eval/evaluate.log while evaluating."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
                                           "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def relative(path: Path, run_dir: Path) -> str:
    try:
        return str(path.resolve().relative_to(run_dir.resolve()))
    except ValueError:
        return str(path.resolve())


def predictions_path(eval_dir: Path, checkpoint_name: str, split: str, tta: str) -> Path:
    stem = Path(checkpoint_name).stem
    return eval_dir / "predictions" / f"{stem}.{split}{'' if tta == 'none' else '.' + tta}.pt"


def evaluate_checkpoint(path: Path, run_dir: Path, settings: DictConfig, writer) -> dict | None:
    """Evaluate one checkpoint; None (with a warning naming it) when it is unreadable."""
    try:
        state = checkpoint_files.load(path)
    except UserError as error:
        log.warning("skipped, not counted as evaluated: %s", error)
        return None
    device = pick_device(str(settings.device))
    amp_dtype = autocast_dtype(settings.precision, device)
    model = build_model(state["config"], state, path, device)
    dataset, dataset_cfg = split_dataset(state["config"], settings.split, settings.get("data_root"))
    loader = loaders.eval_loader(dataset, settings.batch_size, settings.num_workers, pin_memory=device.type == "cuda")
    started = time.perf_counter()
    log_probs, labels = predict(model, loader, device, amp_dtype, settings.tta)
    if len(labels) != len(dataset):
        raise RuntimeError(f"evaluated {len(labels)} samples of a split of {len(dataset)}")
    summary = metrics.summarize(log_probs, labels, dataset_cfg.num_classes)
    name = relative(path, run_dir)
    row = {
        "checkpoint": name, "epoch": state["epoch"], "global_step": state["global_step"],
        "split": settings.split, "tta": settings.tta, **summary,
        "top1_ci_low": summary["top1_ci95"][0], "top1_ci_high": summary["top1_ci95"][1],
        "seconds": round(time.perf_counter() - started, 3), "evaluated_at": now(),
    }
    checkpoint_files.save_atomic({"log_probabilities": log_probs, "labels": labels},
                           predictions_path(run_dir / "eval", name, settings.split, settings.tta))
    tag = settings.split if settings.tta == "none" else f"{settings.split}_{settings.tta}"
    for key in SCALARS:
        writer.add_scalar(f"eval/{tag}/{key}", row[key], state["global_step"])
    writer.flush()
    log.info("%s (epoch %d) on %s: loss %.4f, top-1 %.2f%% [%.2f, %.2f], %d samples in %.1f s", name, state["epoch"],
             settings.split, row["loss"], 100 * row["top1"], 100 * row["top1_ci_low"], 100 * row["top1_ci_high"],
             row["n"], row["seconds"])
    return row


def direction_of(settings: DictConfig) -> str:
    if settings.direction != "auto":
        return settings.direction
    return "min" if settings.metric in ("loss", "ece") else "max"


def best_row(rows: list[dict], settings: DictConfig) -> dict | None:
    """The best evaluated checkpoint by metric and direction (ties: the earlier epoch)."""
    candidates = [r for r in rows if r["split"] == "val" and r["tta"] == settings.tta]
    if not candidates:
        return None
    sign = 1 if direction_of(settings) == "max" else -1
    return max(candidates, key=lambda r: (sign * r[settings.metric], -r["epoch"]))


def write_best(run_dir: Path, best: dict, settings: DictConfig) -> None:
    """best.json, plus the confusion matrix, confused pairs and galleries when the best changed."""
    eval_dir = run_dir / "eval"
    path = eval_dir / "best.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    record = {"checkpoint": best["checkpoint"], "epoch": best["epoch"], "global_step": best["global_step"],
              "metric": settings.metric, "direction": direction_of(settings), "value": best[settings.metric],
              "split": best["split"], "tta": best["tta"], "metrics": best}
    same = all(previous.get(key) == record[key] for key in ("checkpoint", "split", "tta"))
    figures_current = same and (eval_dir / "confusion_matrix.png").exists()
    if settings.galleries and not figures_current:
        record["confused_pairs"] = write_figures(run_dir, best, settings)
    elif "confused_pairs" in previous:
        record["confused_pairs"] = previous["confused_pairs"]
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(record, indent=2) + "\n")
    temporary.replace(path)


def write_figures(run_dir: Path, best: dict, settings: DictConfig) -> list[dict]:
    from runner import checkpoint_files
    from runner.evaluation import reports

    eval_dir = run_dir / "eval"
    saved = torch.load(predictions_path(eval_dir, best["checkpoint"], best["split"], best["tta"]), weights_only=True)
    log_probs, labels = saved["log_probabilities"], saved["labels"]
    config = checkpoint_files.load(run_dir / best["checkpoint"])["config"]
    dataset, dataset_cfg = split_dataset(config, best["split"], settings.get("data_root"))
    names = introspect.class_names(dataset, dataset_cfg.num_classes)
    predictions = log_probs.argmax(dim=1)
    confusion = metrics.confusion_matrix(predictions, labels, dataset_cfg.num_classes)
    reports.confusion_matrix_png(confusion, names, eval_dir / "confusion_matrix.png")
    with open(eval_dir / "confusion_matrix.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["true \\ predicted", *names])
        for name, counts in zip(names, confusion.tolist(), strict=True):
            writer.writerow([name, *counts])
    mean, std = transforms.channel_stats(dataset_cfg)
    losses = -log_probs.gather(1, labels[:, None]).squeeze(1)
    reports.loss_galleries(losses, predictions, labels, lambda i: dataset[i][0], names, mean, std, eval_dir)
    pairs = metrics.most_confused_pairs(confusion)
    for pair in pairs:
        pair["true_name"], pair["predicted_name"] = names[pair["true"]], names[pair["predicted"]]
    log.info("figures of the best checkpoint (%s) in %s", best["checkpoint"], eval_dir)
    return pairs


def print_table(rows: list[dict], best: dict | None, split: str, tta: str, metric: str) -> None:
    shown = sorted((r for r in rows if r["split"] == split and r["tta"] == tta), key=lambda r: r["epoch"])
    header = f"  {'checkpoint':<28} {'epoch':>5} {'loss':>8} {'top-1':>7} {'top-5':>7} {'bal.acc':>7}"
    lines = [f"{split} split{'' if tta == 'none' else ', tta=' + tta} (best by {metric} marked *):", header]
    for r in shown:
        mark = "*" if best is not None and r["checkpoint"] == best["checkpoint"] else " "
        lines.append(f"{mark} {r['checkpoint']:<28} {r['epoch']:>5} {r['loss']:>8.4f} {100 * r['top1']:>6.2f}% "
                     f"{100 * r['top5']:>6.2f}% {100 * r['balanced_accuracy']:>6.2f}%")
    print("\n".join(lines))


# ---------------------------------------------------------------------------------------------
# whole runs


def evaluate_run(run_dir: Path, settings: DictConfig, only: Path | None = None) -> dict | None:
    """Evaluate what is new in run_dir on settings.split; returns the best validation row."""
    eval_dir = run_dir / "eval"
    eval_dir.mkdir(parents=True, exist_ok=True)
    with log_file(eval_dir / "evaluate.log"), locked(eval_dir):
        if settings.split == "test":
            return look_at_test(run_dir, settings, only)
        evaluate_pending(run_dir, settings, [only] if only else checkpoint_files.list_checkpoints(run_dir / "checkpoints"))
        rows = read_rows(eval_dir)
        best = best_row(rows, settings)
        if best is not None:
            write_best(run_dir, best, settings)
        print_table(rows, best, "val", settings.tta, settings.metric)
        return best


def evaluate_one(run_dir: Path, settings: DictConfig, path: Path) -> dict | None:
    """Evaluate one checkpoint (unless it already is) and return its row; None if unreadable."""
    (run_dir / "eval").mkdir(parents=True, exist_ok=True)
    with locked(run_dir / "eval"):
        evaluate_pending(run_dir, settings, [path])
    return find_row(run_dir, relative(path, run_dir), settings.split, settings.tta)


def evaluate_pending(run_dir: Path, settings: DictConfig, paths: list[Path]) -> int:
    """Evaluate the checkpoints in paths that have no row yet for this split and tta."""
    from torch.utils.tensorboard import SummaryWriter

    done = {(r["checkpoint"], r["split"], r["tta"]) for r in read_rows(run_dir / "eval")}
    pending = [p for p in paths if (relative(p, run_dir), settings.split, settings.tta) not in done]
    if not pending:
        return 0
    evaluated = 0
    writer = SummaryWriter(str(run_dir / "tb"), filename_suffix=".eval")
    try:
        for path in pending:
            row = evaluate_checkpoint(path, run_dir, settings, writer)
            if row is not None:
                append_row(run_dir / "eval", row)
                evaluated += 1
    finally:
        writer.close()
    return evaluated


def look_at_test(run_dir: Path, settings: DictConfig, only: Path | None) -> dict | None:
    """The final look: the best checkpoint by validation on the test split, recorded in the ledger."""
    val_settings = OmegaConf.merge(settings, {"split": "val"})
    if only is None:
        evaluate_pending(run_dir, val_settings, checkpoint_files.list_checkpoints(run_dir / "checkpoints"))
        best = best_row(read_rows(run_dir / "eval"), settings)
        if best is None:
            raise UserError(f"{run_dir} has no evaluated checkpoint to look at. Fix: train it first")
        only = run_dir / best["checkpoint"]
    name = relative(only, run_dir)
    evaluate_pending(run_dir, settings, [only])
    row = find_row(run_dir, name, "test", settings.tta)
    if row is None:
        raise UserError(f"{only} could not be read. Fix: pick another checkpoint=FILE")
    record_test_look(run_dir, name, settings.tta, row["top1"])
    print_table(read_rows(run_dir / "eval"), row, "test", settings.tta, settings.metric)
    return row


def record_test_look(run_dir: Path, checkpoint_name: str, tta: str, top1: float) -> None:
    """Append this look at the test split to the run's ledger; warn if it is not the first."""
    ledger = run_dir / "eval" / "test_ledger.jsonl"
    looks = [json.loads(line) for line in ledger.read_text().splitlines()] if ledger.exists() else []
    if looks:
        log.warning("the test split of this run has been looked at %d time(s) before (first %s, %s): results chosen "
                    "after looking are no longer an unbiased estimate. Tune on val; test once.",
                    len(looks), looks[0]["time"], looks[0]["checkpoint"])
    with open(ledger, "a") as file:
        file.write(json.dumps({"time": now(), "checkpoint": checkpoint_name, "tta": tta, "top1": top1}) + "\n")


def run_finished(run_dir: Path) -> bool:
    """True once the training run has ended (finished or failed), by its run.json."""
    try:
        status = json.loads((run_dir / "run.json").read_text()).get("status", "")
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    return status != "running"


def wait_for_run(settings: DictConfig) -> Path:
    """watch=true may start before the training run has made its directory: wait for it."""
    deadline = time.monotonic() + 60 * settings.idle_minutes
    while True:
        try:
            return run_directory(settings)
        except UserError:
            if time.monotonic() > deadline:
                raise
            time.sleep(settings.poll_seconds)


def watch(run_dir: Path, settings: DictConfig) -> dict | None:
    """Evaluate each checkpoint as soon as it is complete; stop after the run has finished."""
    idle_since = time.monotonic()
    log.info("watching %s (every %.1f s)", run_dir, settings.poll_seconds)
    while True:
        finished = run_finished(run_dir)  # read before listing: no checkpoint can appear after it
        eval_dir = run_dir / "eval"
        eval_dir.mkdir(parents=True, exist_ok=True)
        with log_file(eval_dir / "evaluate.log"), locked(eval_dir):
            new = evaluate_pending(run_dir, settings, checkpoint_files.list_checkpoints(run_dir / "checkpoints"))
        if new:
            idle_since = time.monotonic()
        if finished:
            log.info("the run has finished")
            return evaluate_run(run_dir, settings)
        if time.monotonic() - idle_since > 60 * settings.idle_minutes:
            log.warning("no new checkpoint for %s minutes and the run has not finished: stopping", settings.idle_minutes)
            return evaluate_run(run_dir, settings)
        time.sleep(settings.poll_seconds)

"""loss=distill's teachers: `python -m runner loss=distill loss.teachers=[RUN_A,RUN_B:best,CKPT]`.

Which checkpoint and weights each names (RUN and RUN:best: the checkpoint its eval/best.json names, with the
weights that row was measured with), loaded by the evaluator's trust rules and built from its own saved config;
an SWA teacher's BatchNorm statistics measured as its evaluator did; the refusals before anything is written
(runner/config/schema.py's validate); and the provenance (run.json and the checkpoints name each teacher's file
and sha256; a resume refuses a teacher file that changed). The loss itself is runner/training/distill.py.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from runner import models
from runner.common import checkpoint_files
from runner.common.errors import UserError
from runner.common.rules import fail
from runner.common.trust import require_trusted
from runner.data import datasets, loaders
from runner.data.clean_views import unaugmented
from runner.models import batch_norm

log = logging.getLogger(__name__)

KEY = "loss.teachers"
TARGET = "runner.training.distill.distillation"  # conf/loss/distill.yaml's _target_
GIVE = "give a run folder (RUN, or RUN:best: its best checkpoint) or a checkpoint file"


def measure_swa_statistics(model: nn.Module, config: dict, found: TeacherFile) -> None:
    """A teacher of SWA weights predicts as its evaluator row did: the BatchNorm statistics the evaluator measured
    (not saved in the checkpoint) measured the same way, over its training split without augmentation, in
    micro-batches of its trainer.micro_batch_size (runner/models/batch_norm.py), on the CPU, once at start."""
    if not batch_norm.batch_norm_modules(model):
        return
    started = time.perf_counter()
    train = unaugmented(datasets.build_splits(OmegaConf.create(config["dataset"]))["train"])
    batches = loaders.eval_loader(train, int(config["trainer"]["micro_batch_size"]), 0, pin_memory=False)
    batch_norm.recompute_statistics(model, (loaders.on_device(x, torch.device("cpu")) for x, _ in batches))
    log.info("%s=%s: the BatchNorm statistics of its swa weights measured over its training split (%d samples "
             "without augmentation), as its evaluator did, in %.1f s", KEY, found.given, len(train),
             time.perf_counter() - started)



# ---------------------------------------------------------------------------------------------
# the teachers' files


@dataclass(frozen=True)
class TeacherFile:
    given: str  # as loss.teachers names it
    checkpoint: Path
    weights: str  # "model" (raw), or the averaged weights the run's best row was measured with ("ema", "swa")


def teacher_file(given: str) -> TeacherFile:
    """The checkpoint `given` names: RUN and RUN:best the one its eval/best.json names, else the file itself."""
    path_text, best = (given[: -len(":best")], True) if given.endswith(":best") else (given, False)
    path = Path(path_text)
    if not path.exists():
        fail(KEY, given, f"names {path}, which does not exist", GIVE)
    if path.is_file():
        if best:
            fail(KEY, given, f"names a file ({path}); :best is a run folder's best checkpoint", f"{KEY}=[{path}]")
        return TeacherFile(given, path, "model")
    best_json = path / "eval" / "best.json"
    if not best_json.is_file():
        fail(KEY, given, f"names a run without a best checkpoint ({best_json} is missing)",
             f"evaluate it first: python -m runner.evaluate run_dir={path}")
    try:
        row = json.loads(best_json.read_text())
        checkpoint = path / row["checkpoint"]
    except (ValueError, KeyError, TypeError):
        fail(KEY, given, f"has an unreadable {best_json}", f"write it again: python -m runner.evaluate run_dir={path}")
    weights = row.get("weights") or (row.get("metrics") or {}).get("weights") or "raw"
    return TeacherFile(given, checkpoint, "model" if weights == "raw" else str(weights))


def load_teacher(found: TeacherFile, trusted) -> tuple[dict, dict]:
    """(its saved config, the state dict to load): refused in one line if untrusted or not a runner checkpoint."""
    try:
        state = checkpoint_files.load(found.checkpoint, parts=checkpoint_files.EVALUATED_PARTS)
    except UserError as error:
        raise UserError(f"{KEY}={found.given!r}: {error}") from None
    require_trusted(state["config"], trusted, source=f"{KEY}={found.given!r} ({found.checkpoint})")
    weights = state["model"]
    if found.weights != "model":
        averaged = (state.get("averaged") or {}).get(found.weights)
        if not isinstance(averaged, dict):
            fail(KEY, found.given, f"names {found.checkpoint} as measured with its {found.weights} weights, which "
                 "it does not hold", f"{KEY}=[{found.checkpoint}] (its raw weights)")
        weights = {**weights, **averaged}
    return state["config"], weights


def teacher_model(config: dict, weights: dict, path: Path) -> nn.Module:
    """The teacher built from its own saved config (nothing fetched: the checkpoint holds every weight)."""
    model_cfg = models.without_pretrained_weights(config["model"])
    model_cfg.init_output_bias = "none"
    model = models.build(model_cfg)
    try:
        model.load_state_dict(weights)
    except RuntimeError as error:
        first = " ".join(str(error).split())[:200]
        raise UserError(f"{KEY}: {path} does not fit the model of its own config ({first}). "
                        "Fix: name a checkpoint written by runner") from None
    return model.eval()


# ---------------------------------------------------------------------------------------------
# before anything is written: runner/config/schema.py's validate


def validate_distillation(cfg: DictConfig) -> None:
    """loss=distill's settings and teachers, each problem one line: none given, temperature <= 0, alpha outside
    [0, 1], a teacher missing, unevaluated (RUN:best), untrusted, or trained on other classes or other images."""
    loss = cfg.loss
    teachers = list(loss.get("teachers") or [])
    if not teachers:
        fail(KEY, teachers, "names no teacher", f"{KEY}=[RUN_A,RUN_B:best] ({GIVE})")
    temperature, alpha = loss.get("temperature"), loss.get("alpha")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or temperature <= 0:
        fail("loss.temperature", temperature, "must be a number > 0", "loss.temperature=4")
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
        fail("loss.alpha", alpha, "must be in [0, 1] (the weight of the teachers' term)", "loss.alpha=0.9")
    trusted = list(cfg.evaluate.get("trust") or [])
    for given in teachers:
        found = teacher_file(str(given))
        config, _ = load_teacher(found, trusted)
        refuse_a_teacher_of_other_data(found.given, config["dataset"], cfg.dataset)


def refuse_a_teacher_of_other_data(given: str, theirs: dict, data: DictConfig) -> None:
    """The teachers predict on the student's inputs: the same classes, image size, channels and mean/std."""
    if theirs.get("num_classes") != data.num_classes:
        fail(KEY, given, f"predicts {theirs.get('num_classes')} classes and the student's data has "
             f"{data.num_classes} classes", "distill from teachers trained on the same classes")
    if pair(theirs.get("image_size")) != pair(data.image_size):
        fail(KEY, given, f"was trained at image size {pair(theirs.get('image_size'))} and the student sees "
             f"{pair(data.image_size)}", f"dataset.image_size=[{','.join(map(str, pair(theirs.get('image_size'))))}], "
             "or teachers trained at the student's size")
    if theirs.get("channels") != data.channels:
        fail(KEY, given, f"was trained on {theirs.get('channels')} channels and the student's data has "
             f"{data.channels} channels", f"dataset.channels={theirs.get('channels')}")
    for key in ("mean", "std"):
        mine, its = per_channel(data.get(key), data.channels), per_channel(theirs.get(key), data.channels)
        if mine != its:
            fail(KEY, given, f"was trained on data standardized with {key} {its} and the student's has {key} {mine}: "
                 "its inputs would be wrong", f"dataset.{key}=[{','.join(map(str, its))}]")


def pair(size) -> tuple[int, int] | None:
    if isinstance(size, int):
        return size, size
    return tuple(size) if size is not None and len(size) == 2 else None


def per_channel(values, channels: int) -> list[float] | None:
    if values is None:
        return None
    values = [float(v) for v in values]
    return values * channels if len(values) == 1 else values


# ---------------------------------------------------------------------------------------------
# provenance: run.json and the checkpoints name the teachers; a resume checks them


def teachers_record(cfg: DictConfig) -> list[dict] | None:
    """[{teacher, checkpoint, weights, sha256}] of loss=distill (None for any other loss): for run.json and
    the checkpoints' provenance; the teachers' weights themselves are never copied into the student's."""
    if cfg.loss.get("_target_") != TARGET:
        return None
    from runner.models.weights import sha256_of

    record = []
    for given in cfg.loss.teachers:
        found = teacher_file(str(given))
        record.append({"teacher": found.given, "checkpoint": str(found.checkpoint), "weights": found.weights,
                       "sha256": sha256_of(found.checkpoint)})
    return record


def refuse_changed_teachers(cfg: DictConfig, recorded: list[dict] | None) -> None:
    """A resume goes on only with the teachers it started with: a file changed since is one line."""
    now = teachers_record(cfg) or []
    before = {entry["teacher"]: entry for entry in recorded or []}
    for entry in now:
        then = before.get(entry["teacher"])
        if then is not None and (then["checkpoint"], then["sha256"]) != (entry["checkpoint"], entry["sha256"]):
            raise UserError(
                f"{KEY}: {entry['teacher']} ({entry['checkpoint']}, sha256 {entry['sha256'][:12]}) changed since the "
                f"run started with it ({then['checkpoint']}, sha256 {then['sha256'][:12]}): the resumed student would "
                "learn from another teacher. Fix: restore that teacher's file, or start a new run (hydra.run.dir=...)")

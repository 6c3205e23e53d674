"""python -m runner.label +experiment=flowers split=val n=100 [seed=0 port=0 examples=3 answers=DIR]

A human baseline: label n samples of a split yourself in a local web page; the page is
runner/evaluation/labeling_page.py, the answers and their score runner/evaluation/human.py.
The label settings (split, n, seed, port, examples, answers) are this command's own: they are
taken off the command line before the training config is composed from the rest, and a bad one
is refused in one line before anything is written.
"""

from __future__ import annotations

import logging
import sys
from functools import partial
from pathlib import Path

from omegaconf import DictConfig

from runner.cli.tool_app import run_tool
from runner.common.errors import UserError, one_line

log = logging.getLogger("runner.label")

HELP = """runner.label: a human baseline. Label n samples of a split yourself, one by one as stored, in a page
served on 127.0.0.1 (keyboard: digits, or type a class number or name and Enter; a few training examples of
each class beside). Each answer is saved as it is given; the same command goes on where you stopped. Compare
with a run: python -m runner.compare ANSWERS RUN.

python -m runner.label +experiment=flowers split=val n=100
python -m runner.label +experiment=flowers split=val n=100 seed=1 port=8765 examples=5
python -m runner.label +experiment=flowers n=100 answers=outputs/labels/second_pass   (annotate twice)
(installed, `runner-label` is the same command; answers go to outputs/labels/<dataset>_<split>_n<n>_seed<seed>/,
its log to outputs/tools/<name>/; it takes the training's settings, below)
"""

DEFAULTS = {"split": "val", "n": 100, "seed": 0, "port": 0, "examples": 3, "answers": None}


def whole_number(key: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UserError(f"{key}={value!r} is not a whole number. Fix: {key}={DEFAULTS[key]}") from None


def label_settings(argv: list[str]) -> tuple[dict, list[str]]:
    """(this command's settings, the rest of the command line for the training config); a bad one: UserError."""
    settings, rest = dict(DEFAULTS), []
    for argument in argv:
        key, _, value = argument.partition("=")
        if key not in DEFAULTS or not _:
            rest.append(argument)
            continue
        settings[key] = value if key in ("split", "answers") else whole_number(key, value)
    if settings["split"] not in ("val", "test"):
        raise UserError(f"split={settings['split']!r} is not a split to label. Fix: split=val or split=test")
    if settings["n"] < 1:
        raise UserError(f"n={settings['n']} is not a number of samples of at least 1. Fix: n=100")
    if settings["port"] != 0 and not 1024 <= settings["port"] <= 65535:
        raise UserError(f"port={settings['port']} is not a port. Fix: port=0 (a free one) or 1024..65535")
    if settings["examples"] < 0:
        raise UserError(f"examples={settings['examples']} is not a count of examples. Fix: examples=3")
    if settings["answers"]:
        refuse_answers_folder(Path(settings["answers"]))
    return settings, rest


def refuse_answers_folder(folder: Path) -> None:
    """answers= must be a folder of answers (new, or one runner.label made): not a file, not a run's folder."""
    if folder.exists() and not folder.is_dir():
        raise UserError(f"answers={folder} is a file, not a folder: nothing was written. Fix: answers=NEW_FOLDER "
                        "(e.g. outputs/labels/second_pass)")
    if (folder / "eval").exists() or (folder / "run.json").exists():
        raise UserError(f"answers={folder} is a run's folder (it has eval/ or run.json): nothing was written. "
                        "Fix: answers=NEW_FOLDER (e.g. outputs/labels/second_pass); compare with the run by "
                        f"python -m runner.compare ANSWERS {folder}")


def sample_name(item, index: int, root) -> str:
    """A sample's file below the dataset's root (its name where it lies elsewhere), or #INDEX in the split."""
    if not isinstance(item, (str, Path)):
        return f"#{index}"
    try:
        return str(Path(item).resolve().relative_to(Path(root).resolve()))
    except (TypeError, ValueError):
        return Path(item).name


def session(cfg: DictConfig, settings: dict):
    """The labeling session of a training config's split: the chosen samples' manifest in the answers folder (made,
    or gone on with), the samples and the training examples per class as the page serves them."""
    # torch: imported after Hydra has answered --help and Tab completion
    from runner.data import datasets, introspect, stored, transforms
    from runner.evaluation import human
    from runner.evaluation.labeling_page import Session, image_bytes

    splits, split, n, seed = datasets.build_splits(cfg.dataset), settings["split"], settings["n"], settings["seed"]
    data = splits[split]
    if len(data) == 0:
        raise UserError(f"dataset {cfg.dataset.name} has no {split} split here. Fix: split=val")
    if n > len(data):
        raise UserError(f"n={n} but the {split} split of {cfg.dataset.name} has {len(data)} samples. Fix: n={len(data)}")
    labels = introspect.labels_of(data).tolist()
    chosen, read, train = human.choose_samples(labels, n, seed), stored.stored_reader(data), \
        stored.stored_reader(splits["train"])
    manifest = {"dataset": cfg.dataset.name, "split": split, "n": n, "seed": seed, "split_size": len(data),
                "classes": introspect.class_names(splits["train"], cfg.dataset.num_classes),
                "samples": [{"index": i, "label": labels[i], "name": sample_name(read(i), i, cfg.dataset.get("root"))}
                            for i in chosen]}
    folder = Path(settings["answers"] or human.answers_folder(cfg.dataset.name, split, n, seed))
    human.open_answers(folder, manifest)
    mean, std = transforms.channel_stats(cfg.dataset)
    references = human.reference_examples(introspect.labels_of(splits["train"]).tolist(), cfg.dataset.num_classes,
                                          settings["examples"], seed)
    return Session(folder, f"{cfg.dataset.name} {split}, {n} samples (seed {seed})",
                   sample=lambda k: image_bytes(read(chosen[k]), mean, std),
                   reference=lambda c, j: image_bytes(train(references[c][j]), mean, std),
                   examples=[len(r) for r in references])


def label(cfg: DictConfig, run_dir: Path, settings: dict) -> int:
    from runner.evaluation.labeling_page import serve

    labeling = session(cfg, settings)
    log.info("answers: %s", labeling.folder)
    score = serve(labeling, settings["port"])
    if score["answered"] == score["n"]:
        log.info("human top-1 on these %d %s samples: %.4f (95%% interval [%.4f, %.4f]); answers in %s",
                 score["n"], settings["split"], score["top1"], *score["top1_ci95"], labeling.folder)
    return 0


def cli() -> None:
    """`python -m runner.label` and the `runner-label` console command."""
    from runner.config.precheck import refuse

    try:
        settings, rest = label_settings(sys.argv[1:])
    except UserError as error:
        refuse(one_line(error))
    sys.argv = [sys.argv[0], *rest]
    run_tool("label", partial(label, settings=settings), HELP)

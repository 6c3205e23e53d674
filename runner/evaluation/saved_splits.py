"""python -m runner.evaluate run_dir=RUN [data_root=DIR]: the data splits as a checkpoint's own saved config built them.

The evaluator, compare's gallery and the swa BatchNorm pass build their data from the dataset config
saved in a checkpoint (not from today's conf/), checked by the rules a training config meets first;
`data_root` points it at another copy of the same files. A run's checkpoints share their dataset
config, so a split is built once per run and process.
"""

from __future__ import annotations

import functools
import json

from omegaconf import OmegaConf

from runner.common import checkpoint_files
from runner.common.errors import UserError, one_line
from runner.data import datasets
from runner.data.clean_views import unaugmented
from runner.data.settings import validate as validate_dataset


def split_dataset(config: dict, split: str, data_root: str | None):
    """(dataset, dataset config): the split as the run built it, from the checkpoint's dataset config (root
    overridable)."""
    if split not in datasets.SPLITS:
        raise UserError(f"split={split!r} is not a split. Fix: split=val or split=test")
    return built_split(json.dumps(config["dataset"], sort_keys=True), split, data_root)


@functools.lru_cache(maxsize=4)
def built_split(dataset_json: str, split: str, data_root: str | None):
    dataset_cfg = OmegaConf.create(json.loads(dataset_json))
    if data_root is not None:
        dataset_cfg.root = data_root
    try:  # the rules a training config's dataset meets, before anything is built from a saved one
        validate_dataset(dataset_cfg)
    except UserError as error:
        raise UserError(f"its saved dataset config does not hold: {one_line(error)}") from None
    except Exception as error:  # a key missing, a value of another type: not a config runner wrote
        raise UserError(f"its saved dataset config is not one runner writes ({type(error).__name__}: "
                        f"{checkpoint_files.first_sentence(error)}). Fix: pick a checkpoint written by runner") from None
    dataset = datasets.build_splits(dataset_cfg)[split]
    if len(dataset) == 0:
        raise UserError(f"dataset {dataset_cfg.name} has no {split} split here. Fix: split=val")
    return dataset, dataset_cfg


def unaugmented_train_split(config: dict, data_root: str | None):
    """The training split as the run built it, without any of its augmentation (crop and flip, auto_augment,
    random_erasing: the data package's clean_views.unaugmented knows them all); mixup/cutmix are the training
    step's and never reach a split."""
    return unaugmented(split_dataset(config, "train", data_root)[0])

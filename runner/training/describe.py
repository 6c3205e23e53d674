"""What a run of `python -m runner +experiment=flowers` is, in its first log lines: the run folder,
the command-line overrides, a one-line summary, and the resolved config into train.log.

No torch here: the entry logs these before importing the training, so the first line comes at once.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from runner.common.study_storage import redact

log = logging.getLogger("runner")


def hydra_overrides() -> list[str]:
    """The command line's overrides, as the log, run.json and TensorBoard record them: a URL's password masked."""
    return [redact(o) for o in HydraConfig.get().overrides.task] if HydraConfig.initialized() else []


def log_what_runs(cfg: DictConfig, run_dir: Path) -> None:
    """The terminal gets the overrides and a one-line summary; the log file the whole config as well."""
    log.info("run directory %s", run_dir)
    log.info("command-line overrides: %s", " ".join(hydra_overrides()) or "(none)")
    log.info("run: %s", summary(cfg))
    in_file = log_to_files_only("resolved config:\n" + redact(OmegaConf.to_yaml(cfg, resolve=True).rstrip()))
    log.info("resolved config: in %s.hydra/config.yaml (python -m runner ... --cfg job prints it)",
             "train.log and " if in_file else "")


def summary(cfg: DictConfig) -> str:
    """dataset, model, optimizer, schedule, loss, epochs and batches, in one line."""
    data, trainer = cfg.dataset, cfg.trainer
    size = data.image_size if isinstance(data.image_size, int) else "x".join(str(s) for s in data.image_size)
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}

    def name(group: str) -> str:  # the option chosen (conf/GROUP/NAME.yaml), else the callable's name
        return choices.get(group) or str(cfg[group]._target_).rsplit(".", 1)[-1]
    return (f"dataset {data.name} ({data.num_classes} classes, {size}), model {name('model')}, "
            f"optimizer {name('optimizer')} (lr {cfg.optimizer.lr}), schedule {name('schedule')}, "
            f"loss {name('loss')}, {trainer.epochs} epoch{'s' if trainer.epochs != 1 else ''}, "
            f"learning batch {trainer.batch_size} "
            f"(micro-batch {trainer.micro_batch_size}), precision {trainer.precision}, seed {trainer.seed}")


def log_to_files_only(message: str) -> bool:
    """Write an INFO record to the log files (train.log) but not to the terminal; False if there is none."""
    files = [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, message, None, None)
    for handler in files:
        handler.handle(record)
    return bool(files)

"""python -m runner.check +experiment=flowers checks=[overfit_batch]   (and runner.inspect_data, runner.lr_find)

The Hydra app shared by the tools that work on a training config: each composes the same config
as training (conf/train.yaml) and writes into its own run directory,
outputs/tools/<name>/<tool>_<time>/ (apart from the runs), with its own log file.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from runner.common.errors import UserError, one_line

log = logging.getLogger("runner")


def tool_arguments(name: str, argv: list[str]) -> list[str]:
    """The tool's command line for Hydra: its job name and run directory, unless given; its own help header.

    `checks=[a,b]` is shorthand for `checks.only=[a,b]` (the rest of `checks.` holds settings).
    """
    args = [f"checks.only={a.split('=', 1)[1]}" if a.startswith("checks=") else a for a in argv]
    if "--help" in args or "-h" in args:  # the tool's own text above the training config's groups and keys
        args.append("hydra.help.header=${runner.tool_help:}")
    if not any(a.startswith("hydra.job.name=") for a in args):
        args.append(f"hydra.job.name={name}")
    if not any(a.startswith("hydra.run.dir=") for a in args):
        # apart from the runs: `tensorboard --logdir outputs/NAME` and runner.runs see training runs only
        args.append(f"hydra.run.dir=outputs/tools/${{name}}/{name}_${{now:%Y-%m-%d_%H-%M-%S}}")
    return args


def training_only_settings(cfg: DictConfig) -> list[str]:
    """What a check or the range test does not do of what the config asks training to do: average the weights,
    mix the micro-batches, stage the fine-tuning (they train the model as it is built, every parameter)."""
    unused = []
    if cfg.trainer.get("ema", {}).get("decay") is not None or cfg.trainer.get("swa", {}).get("start_epoch") is not None:
        unused.append("trainer.ema/trainer.swa (no weights averaged)")
    if any((cfg.dataset.get(key) or {}).get("alpha", 0) for key in ("mixup", "cutmix")):
        unused.append("dataset.mixup/cutmix (no micro-batch mixed)")
    if (cfg.get("finetune") or {}).get("freeze_epochs", 0):
        unused.append("finetune.freeze_epochs (no frozen stage)")
    if cfg.trainer.get("log_histograms_every") is not None or (cfg.get("checkpoint") or {}).get("every_updates") is not None:
        unused.append("trainer.log_histograms_every/checkpoint.every_updates (no histograms, no light checkpoints)")
    return unused


def run_tool(name: str, work: Callable[[DictConfig, Path], int], help_text: str) -> None:
    """Run `work(cfg, run_dir)` as a Hydra app on the train config; its return value is the exit code.

    `help_text` heads the tool's --help (the train config's own header describes training)."""
    from runner.config.precheck import refuse_bad_command_line
    from runner.config.schema import CONF, register_configs, validate

    register_configs()
    OmegaConf.register_new_resolver("runner.tool_help", lambda: help_text, replace=True)
    sys.argv = [sys.argv[0], *tool_arguments(name, sys.argv[1:])]
    refuse_bad_command_line("train", validate, sys.argv[1:])  # before Hydra makes a run directory

    @hydra.main(config_path=CONF, config_name="train", version_base="1.3")
    def main(cfg: DictConfig) -> None:
        try:
            validate(cfg)
            from runner.data.standardization import (
                standardize_as_the_weights_expect,  # as training decides it
            )

            standardization = standardize_as_the_weights_expect(cfg, list(HydraConfig.get().overrides.task))
            if standardization:
                log.info("%s", standardization)
            unused = training_only_settings(cfg) if name in ("check", "lr_find") else []
            if unused:
                log.info("not used by runner.%s (the training's alone): %s", name, "; ".join(unused))
            code = work(cfg, Path(HydraConfig.get().runtime.output_dir))
        except UserError as error:
            log.error("%s", one_line(error))
            sys.exit(2)
        if code:
            sys.exit(code)

    main()

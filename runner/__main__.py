"""python -m runner [+experiment=NAME] [group=option] [key=value ...]   (the Hydra entry point)."""

import logging
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from runner.errors import UserError

log = logging.getLogger("runner")


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Returns the best validation metric (evaluate.metric), the objective a sweeper optimizes."""
    from runner.job import train_job  # after Hydra has parsed --help/--cfg: those stay fast

    hydra_cfg = HydraConfig.get()
    try:
        result = train_job(cfg, Path(hydra_cfg.runtime.output_dir))
    except UserError as error:
        log.error("%s", error)
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # the sweeper records the failed trial and goes on
        sys.exit(2)
    return None if result["best"] is None else result["best"][cfg.evaluate.metric]


if __name__ == "__main__":
    main()

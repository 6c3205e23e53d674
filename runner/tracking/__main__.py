"""`python -m runner.tracking RUN_DIR [logger.mlflow.tracking_uri=...]`: send a run's trackers what they have not
received (a server that was down at the end, rows a later `python -m runner.evaluate` wrote); exit 1 if some is
still not sent. The trackers are those of the run's own config (RUN_DIR/.hydra/config.yaml), changed by the
key=value pairs given.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from omegaconf import OmegaConf

from runner.tracking.settings import LoggerSettings, trackers_of
from runner.tracking.sync import sync_run


def main(arguments: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if not arguments or not (Path(arguments[0]) / ".hydra" / "config.yaml").is_file():
        print(f"usage: python -m runner.tracking RUN_DIR [key=value ...]: {arguments[0] if arguments else 'no RUN_DIR'} "
              "is not a run folder (no .hydra/config.yaml)", file=sys.stderr)
        return 2
    run_dir = Path(arguments[0])
    cfg = OmegaConf.merge(OmegaConf.load(run_dir / ".hydra" / "config.yaml"), OmegaConf.from_dotlist(arguments[1:]))
    cfg.logger = OmegaConf.merge(OmegaConf.structured(LoggerSettings), cfg.get("logger") or {})  # defaults filled in
    if not trackers_of(cfg.logger):
        print(f"{run_dir} has no tracker (its logger is [tensorboard]). Fix: add logger.mlflow={{}} or logger.wandb={{}}",
              file=sys.stderr)
        return 2
    left = sync_run(cfg, run_dir)
    return 1 if any(left.values()) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

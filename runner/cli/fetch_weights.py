"""python -m runner.fetch_weights model=timm model.name=convnext_tiny.fb_in1k model.pretrained=true   (or +experiment=NAME)

A model's pretrained weights, downloaded ahead of a job on a machine with internet (a cluster's login node)
into the caches the job then reads: RUNNER_WEIGHTS=DIR when set (a folder the compute nodes share), else
the usual Hugging Face and torch hub caches. The config is composed as `python -m runner` composes it and
the model is built as the job builds it, so the same overrides fetch exactly what the job will load, and
the load itself checks that the file fits. Nothing is written but the weights: Hydra's folder for this
command is a temporary one (a fetch is not a run; runner.runs and TensorBoard never see it).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from omegaconf import DictConfig

from runner.cli.tool_app import run_tool
from runner.common.errors import UserError

HELP = """runner.fetch_weights: download a model's pretrained weights ahead of a job without internet, into
RUNNER_WEIGHTS=DIR (a folder the compute nodes share) or else the usual hub caches; prints the file, its
sha256 and the line the job needs (export RUNNER_WEIGHTS=DIR). The same settings as the job fetch what it loads.

python -m runner.fetch_weights model=timm model.name=convnext_tiny.fb_in1k model.pretrained=true
RUNNER_WEIGHTS=/shared/weights python -m runner.fetch_weights +experiment=flowers_finetune
(installed, `runner-fetch-weights` is the same command; it writes nothing but the weights, and takes the
training's settings, below)
"""

EXAMPLE = "model=timm model.name=convnext_tiny.fb_in1k model.pretrained=true"


def refuse_nothing_to_fetch(model: DictConfig) -> None:
    """A model configured without hub weights (from scratch, or from a local file) is one line, before any work."""
    name = str(model.get("_target_", "?")).rsplit(".", 1)[-1]
    if model.get("weights_path") is not None:
        raise UserError(f"model.weights_path={model.weights_path} is a local file: nothing to fetch. Fix: copy that "
                        "file where the job can read it, or set model.weights_path=null and model.pretrained=true "
                        "to fetch the hub's weights")
    if "pretrained" not in model:
        raise UserError(f"model {name} has no pretrained weights: nothing to fetch. Fix: a pretrained model, "
                        f"e.g. {EXAMPLE}")
    if not model.pretrained and not model.get("weights"):
        raise UserError("model.pretrained=false: the job starts from scratch, nothing to fetch. Fix: "
                        "model.pretrained=true, here and in the job")


def fetch(cfg: DictConfig) -> dict:
    """Build cfg's model with its pretrained weights, so they land in the caches; print where and what; the record."""
    import torch  # after Hydra has answered --help and Tab completion

    from runner import models
    from runner.models.weights import cache_folders, use_weights_home, weights_home

    refuse_nothing_to_fetch(cfg.model)
    use_weights_home()
    # the prior init needs class counts; any will do, the built model is thrown away
    model = models.build(cfg.model, class_counts=torch.ones(cfg.dataset.num_classes))
    record = getattr(model, "pretrained_weights", None)
    if not record:
        raise UserError(f"model {cfg.model._target_} loaded no pretrained weights: nothing to fetch. Fix: a "
                        f"pretrained model, e.g. {EXAMPLE}")
    print(where_the_weights_are(record, weights_home(), cache_folders()))
    return record


def where_the_weights_are(record: dict, home: Path | None, caches: list[str]) -> str:
    """The fetch's answer: which weights, the file, its sha256, and what the job needs to find them."""
    lines = [f"weights: {record['name']} ({record['source']})",
             f"file:    {record['file'] or 'not found in ' + ' or '.join(caches)}",
             f"sha256:  {record['sha256']}"]
    if home is not None:
        # HF_HUB_OFFLINE: without it, a node without internet retries the hub for about a minute before reading
        # the cache (huggingface_hub's backoff), and an empty cache fails only after that
        lines += ["the job reads them with:", f"export RUNNER_WEIGHTS={home}", "export HF_HUB_OFFLINE=1"]
    else:
        lines += [f"the job reads them from the default caches ({' and '.join(caches)}): nothing to export where "
                  "the compute nodes share this home folder; where they do not, fetch into a folder they share: "
                  "RUNNER_WEIGHTS=DIR python -m runner.fetch_weights (the same settings)"]
    return "\n".join(lines)


def fetch_into_caches(cfg: DictConfig, run_dir: Path) -> int:
    fetch(cfg)
    return 0


def cli() -> None:
    """`python -m runner.fetch_weights` and the `runner-fetch-weights` console command."""
    with tempfile.TemporaryDirectory(prefix="runner-fetch-weights-") as scratch:
        if not any(arg.startswith("hydra.run.dir=") for arg in sys.argv[1:]):
            sys.argv.append(f"hydra.run.dir={scratch}")  # Hydra's log and .hydra/: gone with the command
        run_tool("fetch_weights", fetch_into_caches, HELP)

"""The run's own evaluation settings, and the others: what makes an evaluation exploratory.

A run is evaluated with its own settings (the `evaluate.` block of its saved config: tta, precision,
batch size; null batch size: the trainer's micro-batch). Its best checkpoint, best.json, figures
and runs-table row come from the rows of those settings alone. An evaluation with other settings
(`python -m runner.evaluate run_dir=RUN tta=flip`, `batch_size=256`, `precision=bf16`) is an
exploration: its rows carry a `variant` label ("tta=flip", "precision=bf16, batch_size=256") and
its best goes beside the run's, in best.VARIANT.json.
"""

from __future__ import annotations

import re

SETTINGS = ("tta", "precision", "batch_size")  # what makes an evaluation another one (the variant's parts)



def own_settings(config: dict) -> dict:
    """The evaluation settings of the run itself, from a checkpoint's saved config: its `evaluate.` block, with
    batch_size null meaning the trainer's micro-batch (as the evaluator reads it)."""
    chosen = config.get("evaluate") if isinstance(config.get("evaluate"), dict) else {}
    return {"tta": str(chosen.get("tta") or "none"), "precision": str(chosen.get("precision") or "32"),
            "batch_size": chosen.get("batch_size") or config["trainer"]["micro_batch_size"]}


def variant_label(used: dict, own: dict) -> str:
    """How `used` differs from the run's own settings: "" when it does not, else "tta=flip, batch_size=256"."""
    return ", ".join(f"{key}={used[key]}" for key in SETTINGS if used[key] != own[key])


def variant_slug(variant: str) -> str:
    """A variant as part of a file name: "tta=flip, batch_size=256" -> "tta-flip_batch_size-256"."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "", variant.replace("=", "-").replace(", ", "_"))


def variant_of(row: dict) -> str:
    """A row's variant; a row an older evaluator wrote has none: the run's own, but for a tta other than none."""
    if isinstance(row.get("variant"), str):
        return row["variant"]
    return "" if row["tta"] == "none" else f"tta={row['tta']}"


def settings_key(settings) -> tuple:
    """(tta, precision, batch_size as asked) of the evaluator's settings: rows of these need not be made again."""
    return str(settings.tta), str(settings.precision), settings.batch_size


def row_settings(row: dict) -> tuple:
    """The settings_key a row was evaluated with (an older row: tta only, the defaults for the others)."""
    return str(row["tta"]), str(row.get("precision") or "32"), row.get("batch_size")


def other_than_tta(row: dict) -> bool:
    """Whether a row's variant lies in more than its tta (another precision or batch size)."""
    return any(part and not part.startswith("tta=") for part in variant_of(row).split(", "))

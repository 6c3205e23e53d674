"""python scripts/submit.py train|sweep|ddp [sbatch settings] [--dry-run] -- [runner overrides]

    python scripts/submit.py train --partition=gpu --gpus=1 --time=8:00:00 -- +experiment=flowers
    python scripts/submit.py sweep --array=8 -- +experiment=flowers +search=flowers hydra.sweeper.n_trials=40
    python scripts/submit.py ddp --nodes=2 --gpus-per-node=4 -- +experiment=flowers trainer.micro_batch_size=32

Fills the job script scripts/slurm/<kind>.sbatch with the given settings (they replace its
#SBATCH defaults), writes it to ./outputs/slurm/, prints the sbatch line and runs it here.
--dry-run prints the generated script and the line, and submits nothing.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from datetime import datetime
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
SETTINGS = ("partition", "time", "gpus", "gpus-per-node", "cpus-per-task", "mem", "account", "nodes",
            "job-name", "qos", "constraint")


def generate(template: str, settings: dict[str, str]) -> str:
    """The template with each given #SBATCH setting replaced (or added after the last one)."""
    lines = template.splitlines()
    for key, value in settings.items():
        line = f"#SBATCH --{key}={value}"
        found = [i for i, text in enumerate(lines) if re.match(rf"#SBATCH --{re.escape(key)}[= ]", text)]
        if found:
            lines[found[0]] = line
        else:
            last = max(i for i, text in enumerate(lines) if text.startswith("#SBATCH"))
            lines.insert(last + 1, line)
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if "--" in argv:
        split = argv.index("--")
        argv, overrides = argv[:split], argv[split + 1:]
    else:
        overrides = []
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["train", "sweep", "ddp"])
    for key in SETTINGS:
        parser.add_argument(f"--{key}")
    parser.add_argument("--array", type=int, help="sweep: number of array tasks (workers)")
    parser.add_argument("--signal-seconds", type=int, help="warn the job this many seconds before its time limit")
    parser.add_argument("--dry-run", action="store_true", help="print the script and the sbatch line; submit nothing")
    args = parser.parse_args(argv)

    settings = {key: getattr(args, key.replace("-", "_")) for key in SETTINGS}
    settings = {key: value for key, value in settings.items() if value is not None}
    if args.array is not None:
        settings["array"] = f"0-{args.array - 1}"
    if args.signal_seconds is not None:
        prefix = "" if args.kind == "ddp" else "B:"  # ddp signals every process; the others the batch shell
        settings["signal"] = f"{prefix}USR1@{args.signal_seconds}"
    template = (PROJECT / "scripts" / "slurm" / f"{args.kind}.sbatch").read_text()
    script = generate(template, settings)
    # jobs run where this is run (their outputs/ lands here), like sbatch itself
    target = Path.cwd() / "outputs" / "slurm" / f"{args.kind}-{datetime.now():%Y-%m-%d_%H-%M-%S}.sbatch"
    command = ["sbatch", str(target), *overrides]
    line = " ".join(shlex.quote(part) for part in command)
    if args.dry_run:
        print(script)
        print(line)
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(script)
    print(line, flush=True)
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

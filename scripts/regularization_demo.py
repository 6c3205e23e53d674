"""python scripts/regularization_demo.py --out outputs/regularization_demo   (about 6 minutes on 2 CPU cores)

The README's demonstration of the regularization features: a small ConvNet on a 200-sample miniature of
scikit-learn's digits (real data, no download, where a from-scratch model overfits), three seeds of each arm:
the baseline, +EMA, +mixup, +TrivialAugment, +random erasing, and the student distilled from the ensemble of the
three baseline runs. Every arm is compared with the baseline of the same seed by runner.compare's paired test on
the same validation samples (exact McNemar and a paired bootstrap interval of the top-1 difference), and the
figures are printed as a markdown table (and written to OUT/summary.md and OUT/summary.json).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

BASE = ["model=convnet", "model.n_blocks=2", "model.channels=16", "dataset.subset=200", "trainer.epochs=40",
        "checkpoint.every_epochs=4", "trainer.deterministic=true", "trainer.device=cpu"]
ARMS = {
    "baseline": [],
    "ema": ["trainer.ema.decay=0.99"],
    "mixup": ["dataset.mixup.alpha=0.2"],
    "trivial": ["dataset.auto_augment=trivial"],
    "erasing": ["dataset.random_erasing=0.25"],
}
SEEDS = (0, 1, 2)


def train(run_dir: Path, overrides: list[str]) -> None:
    """One run (trained, then evaluated on val by the run itself); a finished run folder is kept as it is."""
    if (run_dir / "eval" / "best.json").exists():
        return
    command = [sys.executable, "-m", "runner", *BASE, *overrides, f"hydra.run.dir={run_dir}"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")


def best(run_dir: Path) -> dict:
    return json.loads((run_dir / "eval" / "best.json").read_text())


def ensemble_summary(out: Path, members: list[Path]) -> Path:
    """The baseline ensemble's evaluation on val (runner.evaluate's mean of the members' probabilities, saved
    with its predictions, so that runner.compare can pair the student with it)."""
    command = [sys.executable, "-m", "runner.evaluate", f"ensemble=[{','.join(str(m) for m in members)}]"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=out)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return sorted(out.glob("outputs/ensembles/*/ensemble.val.json"))[-1]


def paired(compare, base: Path, other: Path) -> str:
    """other vs base on the same validation samples: the top-1 difference and the exact McNemar p."""
    result = compare(base, other)
    return f"{result['bootstrap']['difference']:+.1%} (p={result['mcnemar']['p_value']:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/regularization_demo"))
    args = parser.parse_args()
    out = args.out.resolve()
    arms = dict(ARMS)
    for name, overrides in arms.items():
        for seed in SEEDS:
            train(out / name / f"seed{seed}", [*overrides, f"trainer.seed={seed}"])
    teachers = [out / "baseline" / f"seed{seed}" for seed in SEEDS]
    arms["distilled"] = ["loss=distill", f"loss.teachers=[{','.join(str(t) for t in teachers)}]"]
    for seed in SEEDS:
        train(out / "distilled" / f"seed{seed}", [*arms["distilled"], f"trainer.seed={seed}"])

    from runner.evaluation.comparison import compare

    ensemble = ensemble_summary(out, teachers)
    lines = ["| arm | val top-1, seeds 0/1/2 | mean | vs the baseline of the same seed (paired McNemar p) |",
             "|---|---|---|---|"]
    rows = []
    for name in arms:
        top1 = [best(out / name / f"seed{seed}")["value"] for seed in SEEDS]
        versus = [] if name == "baseline" else [paired(compare, out / "baseline" / f"seed{seed}", out / name / f"seed{seed}")
                                                for seed in SEEDS]
        rows.append({"arm": name, "top1": top1, "vs_baseline": versus})
        lines.append(f"| {name} | {' / '.join(f'{v:.1%}' for v in top1)} | {statistics.mean(top1):.1%} | "
                     f"{', '.join(versus) or '-'} |")
    ensemble_top1 = json.loads(ensemble.read_text())["ensemble"]["top1"]
    student_vs_teachers = [paired(compare, ensemble, out / "distilled" / f"seed{seed}") for seed in SEEDS]
    lines.append(f"| the 3 baselines' ensemble (the teachers) | - | {ensemble_top1:.1%} | - |")
    lines.append(f"\nEach distilled student vs the teachers' ensemble: {', '.join(student_vs_teachers)}")
    summary = {"rows": rows, "ensemble_top1": ensemble_top1, "student_vs_teachers": student_vs_teachers}
    text = "\n".join(lines)
    print(text)
    (out / "summary.md").write_text(text + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()

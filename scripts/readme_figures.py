"""python scripts/readme_figures.py

Regenerates the figures the README shows (scripts/figures/*.png) from real runs of the default
config (digits + MLP): the evaluation's galleries and confusion matrix, and the LR range test.
"""

import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FIGURES = Path(__file__).resolve().parent / "figures"

with tempfile.TemporaryDirectory() as workdir:
    result = subprocess.run([sys.executable, "-m", "runner"], cwd=workdir, capture_output=True, text=True, check=True)
    run_dir = Path(re.search(r"^run directory: (.+)$", result.stdout, re.M).group(1))
    FIGURES.mkdir(exist_ok=True)
    for name in ("gallery_max.png", "gallery_median.png", "confusion_matrix.png"):
        shutil.copy(run_dir / "eval" / name, FIGURES / name)
        print(FIGURES / name)
    found = subprocess.run([sys.executable, "-m", "runner.lr_find"], cwd=workdir, capture_output=True, text=True,
                           check=True)
    plot = Path(re.search(r"^plot: (.+)$", found.stdout, re.M).group(1))
    shutil.copy(plot, FIGURES / "lr_find.png")
    print(FIGURES / "lr_find.png", found.stdout.splitlines()[-1])

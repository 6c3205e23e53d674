"""python -m runner.X ... (installed: runner-X): the commands, one module each.

    train         python -m runner                    train a model (conf/train.yaml)
    evaluate      python -m runner.evaluate           evaluate a run's checkpoints offline (conf/evaluate.yaml)
    check         python -m runner.check              the sanity checks of a training config, one table
    inspect_data  python -m runner.inspect_data       the data report: look at the data as the model sees it
    lr_find       python -m runner.lr_find            the learning-rate range test
    runs          python -m runner.runs               every run below a folder in one table
    compare       python -m runner.compare            two runs (or two groups of runs) side by side, with a paired test
    label         python -m runner.label              a human baseline: label n samples yourself, scored beside the models

Each `python -m` entry is a few lines in runner/<command>.py (runner/__main__.py for training)
that catches the stop signals before importing the command from here; pyproject's
[project.scripts] installs the same `cli()` functions as the runner-X commands. A command imports
torch only after Hydra has answered --help and Tab completion.
"""

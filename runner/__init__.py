"""runner: a Hydra-configured experiment runner for PyTorch image classification.

    python -m runner                      # train the default (digits + MLP, no download)
    python -m runner +experiment=flowers  # the flagship experiment
"""

__version__ = "0.1.0"

"""`python -m runner logger=[tensorboard,mlflow]` (or `wandb`): experiment trackers fed from what the run has written.

TensorBoard's event files (tb/), the resolved config and the evaluator's files (eval/) stay the source of truth; the
trackers receive copies at each checkpoint and at the end (sync.py). Nothing here imports mlflow or wandb unless a
run asks for them (settings.py is read by the schema, which must stay free of torch and of the trackers).
"""

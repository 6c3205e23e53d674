"""The evaluation stage, offline: evaluate (checkpoints of a run, whole split, eval mode), results
(the run's eval/ folder), ensemble, metrics, reports (figures). Never imports training."""

"""The evaluation stage, offline: evaluator (checkpoints of a run, whole split, eval mode), results
(the run's eval/ folder), ensemble, metrics, reports (figures). Never imports training."""

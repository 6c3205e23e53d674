"""The composed config: its schema assembled from the blocks' schemas (schema.py) and the command line
checked before Hydra makes a run folder (precheck.py). The one-line rules every block's validator is
written with are below every stage, in runner/common/rules.py."""

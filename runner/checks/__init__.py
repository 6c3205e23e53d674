"""The practice's sanity checks beside the data flow (`python -m runner.check`): what they look at
(setup), the checks on the data, the model and short trainings (data, model, training), their
registry and table, the data report (inspect_data) and the learning-rate range test (lr_find)."""

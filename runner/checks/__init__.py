"""The practice's sanity checks beside the data flow: the checks, their table, the data report
(inspect_data) and the learning-rate range test (lr_find)."""

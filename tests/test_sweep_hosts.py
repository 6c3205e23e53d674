"""Workers on several machines sharing a study (PostgreSQL) without a shared filesystem: each trial records
the host its run folder is on, and the results say on which host a folder is when it is not on this one."""

from __future__ import annotations

import csv
import socket
from dataclasses import asdict

import optuna
import yaml
from omegaconf import OmegaConf

from hydra_plugins.runner_sweeper.runner_sweeper import RunnerOptunaSweeper, RunnerOptunaSweeperConf
from runner.common.study_storage import storage_for
from runner.sweep import study as sweep_study

LR = {"optimizer.lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)}


def finished_trial(the_study, lr: float, value: float, run_dir: str, host: str | None) -> None:
    trial = the_study.ask(LR)
    the_study._storage.set_trial_param(trial._trial_id, "optimizer.lr", LR["optimizer.lr"].to_internal_repr(lr),
                                       LR["optimizer.lr"])
    sweep_study.note(the_study, trial._trial_id, "run_dir", run_dir)
    if host:
        sweep_study.note(the_study, trial._trial_id, "host", host)
    the_study.tell(trial, value)


def sweeper_for(the_study) -> RunnerOptunaSweeper:
    sweeper = RunnerOptunaSweeper(**asdict(RunnerOptunaSweeperConf()))
    sweeper.config = OmegaConf.create({"evaluate": {"metric": "top1", "direction": "auto"}})
    sweeper.refusal = lambda overrides: None  # the coarse-to-fine's ends: taken
    sweeper.objectives = ["top1"]
    return sweeper


def test_the_best_run_on_another_host_is_said_to_be_there(tmp_path, capsys):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    the_study = optuna.create_study(study_name="s", storage=storage_for(str(tmp_path / "study.journal")),
                                    direction="maximize")
    finished_trial(the_study, 1e-3, 0.5, "trial_0000", socket.gethostname())
    (tmp_path / "trial_0000").mkdir()
    finished_trial(the_study, 1e-2, 0.9, "trial_0001", "node-elsewhere-7")  # its folder is on that node
    sweeper_for(the_study).report(the_study, tmp_path, ["+experiment=smoke"], LR)
    printed = capsys.readouterr().out
    assert f"trial 1, {tmp_path / 'trial_0001'} on host node-elsewhere-7 (not on this machine)" in printed, printed
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert results["best_run_dir"] == "trial_0001" and results["best_run_host"] == "node-elsewhere-7"
    with open(tmp_path / "trials.csv") as file:
        assert [row["host"] for row in csv.DictReader(file)] == [socket.gethostname(), "node-elsewhere-7"]


def test_a_trials_job_records_the_host_of_its_run_folder(tmp_path):
    from runner.sweep.trial_link import TrialLink

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = str(tmp_path / "study.journal")
    the_study = optuna.create_study(study_name="s", storage=storage_for(storage))
    trial = the_study.ask()
    TrialLink(OmegaConf.create({"storage": storage, "trial_id": trial._trial_id, "trial": trial.number, "study": "s",
                                "pruner": "none", "heartbeat_seconds": 10}))
    recorded = the_study.trials[0]
    assert recorded.system_attrs["runner:host"] == recorded.user_attrs["host"] == socket.gethostname()

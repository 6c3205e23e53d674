"""The SLURM job scripts, submitted with a real sbatch to a real (single-node) SLURM.

.ci/run starts one with scripts/slurm/local_cluster.sh; elsewhere these tests skip, saying why.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from runner.common import checkpoint_files
from runner.common.study_storage import storage_for
from tests.conftest import (
    PROJECT,
    STOPPABLE,
    assert_identical,
    checkpoint_weights,
    cli_env,
    run_cli,
)


def slurm_reachable() -> str | None:
    if shutil.which("sbatch") is None:
        return "sbatch is not installed"
    probe = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    if probe.returncode != 0 or not probe.stdout.strip():
        return f"no SLURM controller answers ({probe.stderr.strip()[:200]})"
    return None


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(slurm_reachable() is not None,
                       reason=f"no SLURM cluster reachable: {slurm_reachable()}; "
                              "scripts/slurm/local_cluster.sh start starts one on this machine"),
]
SMALL = ["--cpus-per-task=1", "--mem=1G", "--time=10:00"]


def submit(args: list[str], cwd: Path) -> str:
    (cwd / "outputs").mkdir(exist_ok=True)
    result = subprocess.run(["sbatch", "--parsable", *args], cwd=cwd, env=cli_env(), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";")[0]


def state(job: str) -> str:
    shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    found = re.search(r"JobState=(\S+)", shown)
    return found.group(1) if found else "UNKNOWN"


def wait(job: str, until=("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY"), timeout=300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = state(job)
        if current in until:
            return current
        time.sleep(0.5)
    raise AssertionError(f"job {job} still {state(job)} after {timeout} s")


def test_a_training_job(workdir):
    job = submit([*SMALL, str(PROJECT / "scripts/slurm/train.sbatch"), "trainer.epochs=2",
                  "checkpoint.every_epochs=1", "evaluate.galleries=false"], workdir)
    assert wait(job) == "COMPLETED", (workdir / f"outputs/runner-train-{job}.out").read_text()[-2000:]
    run_dir = workdir / "outputs" / "default" / f"slurm-{job}"  # the job's own, deterministic folder
    assert (run_dir / "checkpoints" / "epoch-0002.pt").is_file()
    assert (run_dir / "eval" / "best.json").is_file()
    out = (workdir / f"outputs/runner-train-{job}.out").read_text()
    assert f"job {job} (restart 0)" in out and f"run directory: {run_dir}" in out


def test_a_preempted_job_requeues_itself_and_ends_with_the_same_weights(workdir):
    # the job's one CPU (SMALL) means one thread; the same here, since float sums depend on the threads
    straight = run_cli([*STOPPABLE, "trainer.num_threads=1", f"hydra.run.dir={workdir / 'straight'}"], cwd=workdir)
    assert straight.returncode == 0, straight.stderr
    job = submit([*SMALL, str(PROJECT / "scripts/slurm/train.sbatch"), *STOPPABLE], workdir)
    run_dir = workdir / "outputs" / "default" / f"slurm-{job}"
    first = run_dir / "checkpoints" / "epoch-0001.pt"
    deadline = time.monotonic() + 180
    while not first.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)
    # what SLURM sends two minutes before the time limit (--signal=B:USR1@120)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True)
    deadline = time.monotonic() + 60
    while state(job) not in ("PENDING", "REQUEUED") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert state(job) in ("PENDING", "REQUEUED")
    assert len(checkpoint_files.list_preempted(run_dir / "checkpoints")) == 1
    # SLURM holds a requeued job back (two minutes) before it may start again; let it start sooner,
    # but not within the second its old credential was revoked in ("Job credential revoked")
    time.sleep(2.5)
    subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], capture_output=True)
    out_file = workdir / f"outputs/runner-train-{job}.out"
    assert wait(job) == "COMPLETED", out_file.read_text()[-3000:]
    out = out_file.read_text()
    assert f"requeued SLURM job {job}" in out and f"job {job} (restart 1)" in out and "resuming from" in out
    assert_identical(checkpoint_weights(workdir / "straight", 3), checkpoint_weights(run_dir, 3))


def test_a_sweep_as_a_job_array_shares_one_study(workdir):
    sweep_dir = workdir / "sweep"
    job = submit([*SMALL, "--array=0-1", str(PROJECT / "scripts/slurm/sweep.sbatch"), "+experiment=smoke",
                  "+search=smoke", "hydra.sweeper.n_jobs=1", f"hydra.sweeper.sweep_dir={sweep_dir}",
                  "hydra.sweeper.study_name=array"], workdir)
    for task in (f"{job}_0", f"{job}_1"):
        assert wait(task) == "COMPLETED", (workdir / f"outputs/runner-sweep-{job}_{task[-1]}.out").read_text()[-2000:]
    study = optuna.load_study(study_name="array", storage=storage_for(str(sweep_dir / "study.journal")))
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert {t.state.name for t in study.trials} == {"COMPLETE"}
    for task in (0, 1):  # both array tasks joined the study
        assert "study array" in (workdir / f"outputs/runner-sweep-{job}_{task}.out").read_text()


def test_ddp_job_with_two_processes_on_one_node(workdir):
    job = submit(["--cpus-per-task=2", "--mem=2G", "--time=10:00", "--export=ALL,NPROC_PER_NODE=2",
                  str(PROJECT / "scripts/slurm/ddp.sbatch"), "trainer.epochs=1", "trainer.micro_batch_size=32",
                  "evaluate.galleries=false"], workdir)
    assert wait(job) == "COMPLETED", (workdir / f"outputs/runner-ddp-{job}.out").read_text()[-3000:]
    log = (workdir / "outputs" / "default" / f"slurm-{job}" / "train.log").read_text()
    assert "in each of 2 processes" in log


def signal_as_the_script_asks(script: Path, job: str) -> subprocess.Popen:
    """Send the script's #SBATCH --signal now, to the processes SLURM would send it to before the time limit:
    B:SIG the batch shell (scancel --batch), SIG every job step but not the batch shell (plain scancel).
    Returns the running scancel (it may return before or after the signal arrives)."""
    asked = re.search(r"^#SBATCH --signal=(B:)?(\w+)@\d+$", script.read_text(), re.M)
    assert asked, f"{script} asks for no --signal"
    return subprocess.Popen(["scancel", f"--signal={asked.group(2)}", *(["--batch"] if asked.group(1) else []), job])


def torchrun_agents(job: str) -> list[int]:
    """The process ids of the job's torchrun agents on this machine (ddp.sbatch's --rdzv_id is the job id)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        started_by_python = Path(command[0].decode(errors="replace")).name.startswith("python")  # not srun
        if started_by_python and b"torch.distributed.run" in command and f"--rdzv_id={job}".encode() in command:
            found.append(int(proc.name))
    return found


def running(pid: int) -> bool:
    """The process exists and has not ended (a zombie has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def test_a_preempted_ddp_job_requeues_itself_once_and_ends_with_the_same_weights(workdir):
    """ddp.sbatch: the warning before the time limit reaches torchrun's workers, and the agent neither dies of it
    nor ends the workers; every rank stops at the same update, rank 0 writes the checkpoint and requeues the job
    once, and the requeued job resumes to the uninterrupted weights.

    The agent may end only after the checkpoint (the requeue stops the job), so the test looks at the agent
    first, then for the checkpoint: an agent found dead while no checkpoint was there yet died of the signal.
    (A USR1 kills a process that does not catch it at once; the workers need an update and a save first.)"""
    settings = [s for s in STOPPABLE if not s.startswith("trainer.micro_batch_size=")]
    settings += ["trainer.micro_batch_size=15", "trainer.num_threads=1"]  # 30 = 15 x 2 processes, one thread each
    script = PROJECT / "scripts/slurm/ddp.sbatch"
    job = submit(["--cpus-per-task=2", "--mem=2G", "--time=10:00", f"--export=ALL,NPROC_PER_NODE=2,RDZV_PORT={free_port()}",
                  str(script), *settings], workdir)
    try:
        # meanwhile the uninterrupted run, two processes as well (--standalone: a free rendezvous port)
        straight = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                                     "-m", "runner", *settings, f"hydra.run.dir={workdir / 'straight'}"],
                                    cwd=workdir, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True)
        run_dir = workdir / "outputs" / "default" / f"slurm-{job}"
        out_file = workdir / f"outputs/runner-ddp-{job}.out"
        first = run_dir / "checkpoints" / "epoch-0001.pt"
        deadline = time.monotonic() + 180
        while not first.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.exists(), out_file.read_text()[-3000:] if out_file.exists() else state(job)
        agents = torchrun_agents(job)  # the local cluster runs its jobs on this machine
        assert len(agents) == 1, agents  # one node, one torchrun
        time.sleep(0.2)  # into the second epoch (about a second long)
        scancel = signal_as_the_script_asks(script, job)
        # the agent outlives the signal, until the workers' checkpoint is written (rank 0's requeue then ends the job)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            alive = all(running(pid) for pid in agents)  # before looking for the checkpoint: see the docstring
            if checkpoint_files.list_preempted(run_dir / "checkpoints"):
                break
            assert alive, "the torchrun agent died of the signal before the workers' checkpoint was written"
            time.sleep(0.002)
        assert scancel.wait(timeout=30) == 0
        deadline = time.monotonic() + 60
        while state(job) not in ("PENDING", "REQUEUED") and time.monotonic() < deadline:
            time.sleep(0.2)
        assert state(job) in ("PENDING", "REQUEUED"), out_file.read_text()[-3000:]
        assert len(checkpoint_files.list_preempted(run_dir / "checkpoints")) == 1, out_file.read_text()[-3000:]
        time.sleep(2.5)  # as above: not within the second the old credential was revoked in
        subprocess.run(["scontrol", "update", f"jobid={job}", "StartTime=now"], capture_output=True)
        assert wait(job) == "COMPLETED", out_file.read_text()[-3000:]
        out = out_file.read_text()
        assert out.count(f"requeued SLURM job {job}") == 1, out[-3000:]  # by rank 0 alone
        assert f"job {job} (restart 1)" in out and re.search(r"resuming from \S*preempt-step-", out), out[-3000:]
        assert "Restarts=1 " in subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
        assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
        assert checkpoint_files.list_preempted(run_dir / "checkpoints") == []  # the finished run left none behind
        straight_out = straight.communicate(timeout=300)[0]
        assert straight.returncode == 0, straight_out[-3000:]
        # bit-identical: the same two processes, one thread each, whether stopped and resumed or not
        assert_identical(checkpoint_weights(workdir / "straight", 3), checkpoint_weights(run_dir, 3))
    finally:
        subprocess.run(["scancel", job], capture_output=True)  # a failed test leaves no job behind


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


def test_the_submit_helper(workdir):
    dry = subprocess.run([sys.executable, str(PROJECT / "scripts/submit.py"), "train", "--time=5:00",
                          "--cpus-per-task=1", "--mem=1G", "--signal-seconds=30", "--dry-run", "--",
                          "trainer.epochs=1"], capture_output=True, text=True, cwd=workdir)
    assert dry.returncode == 0
    assert "#SBATCH --time=5:00" in dry.stdout and "#SBATCH --signal=B:USR1@30" in dry.stdout
    assert "#SBATCH --time=24:00:00" not in dry.stdout
    assert re.search(r"^sbatch \S+/outputs/slurm/train-\S+\.sbatch trainer.epochs=1$", dry.stdout, re.M)
    submitted = subprocess.run([sys.executable, str(PROJECT / "scripts/submit.py"), "train", "--time=5:00",
                                "--cpus-per-task=1", "--mem=1G", "--", "trainer.epochs=1", "evaluate.galleries=false"],
                               capture_output=True, text=True, env=cli_env(), cwd=workdir)
    assert submitted.returncode == 0, submitted.stderr
    job = re.search(r"Submitted batch job (\d+)", submitted.stdout).group(1)
    assert wait(job) == "COMPLETED"

"""loss=distill: a student learns from its teachers' averaged softened predictions plus the labels.

The loss against a hand-computed KL + CE; a student of a trained teacher reaches its predictions; the teachers
are named (path, sha256) but never saved in the student's checkpoints; a stopped run resumes bit-identical; bad
teachers are refused at validation in one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from runner import models
from runner.common import checkpoint_files
from runner.common.errors import UserError
from runner.common.stop_signals import Preempted
from runner.config.schema import validate
from runner.data import datasets
from runner.run import train_and_evaluate as train_job
from runner.training import distill, teachers
from runner.training.step import micro_batch_loss
from tests.conftest import TINY, assert_identical, compose_config, run_cli, stop_at_step

# ---------------------------------------------------------------------------------------------
# the loss on constructed logits


def hand_computed(student: list[list[float]], teacher_probs: list[list[float]], targets, temperature: float,
                  alpha: float) -> list[float]:
    """alpha * T^2 * KL(p_teacher || softmax(student / T)) + (1 - alpha) * CE(student, targets), with plain math;
    targets: class indices, or per-class probabilities (mixup's)."""
    losses = []
    for s, p, t in zip(student, teacher_probs, targets, strict=True):
        soft = [math.exp(v / temperature) for v in s]
        q = [v / sum(soft) for v in soft]
        kl = sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True) if pi > 0)
        log_softmax = [v - math.log(sum(math.exp(u) for u in s)) for v in s]
        weights = [1.0 if c == t else 0.0 for c in range(len(s))] if isinstance(t, int) else t
        ce = -sum(w * ls for w, ls in zip(weights, log_softmax, strict=True))
        losses.append(alpha * temperature**2 * kl + (1 - alpha) * ce)
    return losses


STUDENT = [[2.0, -1.0, 0.5], [0.0, 0.3, -2.0], [1.5, 1.5, 1.5]]
TEACHER_PROBS = [[0.7, 0.1, 0.2], [0.05, 0.9, 0.05], [0.0, 0.5, 0.5]]


@pytest.mark.parametrize("targets", [[0, 1, 2], [[1.0, 0.0, 0.0], [0.3, 0.7, 0.0], [0.0, 0.2, 0.8]]],
                         ids=["hard", "soft"])
@pytest.mark.parametrize("temperature, alpha", [(4.0, 0.9), (1.0, 0.5), (2.0, 0.0), (3.0, 1.0)])
def test_the_loss_is_kl_times_t_squared_plus_cross_entropy(targets, temperature, alpha):
    got = distill.distillation_loss(torch.tensor(STUDENT), torch.tensor(targets), torch.tensor(TEACHER_PROBS),
                                    temperature, alpha)
    assert got.shape == (3,)
    assert got.tolist() == pytest.approx(hand_computed(STUDENT, TEACHER_PROBS, targets, temperature, alpha), rel=1e-5)


class Constant(nn.Module):
    """A teacher that answers its logits whatever the images (and counts its calls and their grad mode)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.tensor(logits)
        self.calls = []

    def forward(self, x):
        self.calls.append((self.training, torch.is_inference_mode_enabled(), x.shape))
        return self.logits.expand(len(x), -1)


def test_the_teachers_softened_predictions_are_averaged_and_seen_without_gradients():
    first, second = Constant([[2.0, 0.0, -2.0]]), Constant([[0.0, 1.0, 0.0]])
    loss = distill.Distillation([first, second], temperature=2.0, alpha=0.9)
    student = nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    total, summed, _ = micro_batch_loss(student, x, y, window_size=5, loss=loss, amp_dtype=None)
    averaged = (torch.softmax(first.logits / 2, 1) + torch.softmax(second.logits / 2, 1)) / 2
    expected = hand_computed(student(x).tolist(), averaged.expand(5, -1).tolist(), y.tolist(), 2.0, 0.9)
    assert float(summed) == pytest.approx(sum(expected), rel=1e-5)
    total.backward()  # the student's gradients only
    assert student.weight.grad is not None
    assert first.calls == [(False, True, (5, 4))] and second.calls == [(False, True, (5, 4))]


def test_the_teachers_predict_in_the_training_precision_and_give_fp32_probabilities():
    seen = []
    teacher = nn.Linear(4, 3)
    teacher.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    loss = distill.Distillation([teacher], temperature=2.0, alpha=0.5)
    probs = loss.teacher_probabilities(torch.randn(5, 4), torch.bfloat16)
    assert seen == [torch.bfloat16] and probs.dtype == torch.float32
    assert torch.allclose(probs.sum(dim=1), torch.ones(5))
    assert not probs.is_inference()  # an ordinary tensor: the student's backward may keep it


def test_without_the_images_only_the_label_term_is_left():
    """runner.check probes the loss on made-up logits without images: it gets the cross-entropy."""
    loss = distill.Distillation([Constant([[0.0, 0.0, 1.0]])], temperature=4.0, alpha=0.9, label_smoothing=0.1)
    logits, y = torch.tensor(STUDENT), torch.tensor([0, 1, 2])
    expected = torch.nn.functional.cross_entropy(logits, y, reduction="none", label_smoothing=0.1)
    assert torch.allclose(loss(logits, y), expected)


# ---------------------------------------------------------------------------------------------
# a trained teacher, a student, their files

TEACHER = [*TINY, "trainer.epochs=4", "trainer.deterministic=true", "evaluate.after_training=true"]
DISTILL = ["loss=distill", "loss.temperature=2.0", "loss.alpha=0.9"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("teacher") / "run"
    train_job(compose_config(TEACHER), run_dir)
    assert (run_dir / "eval" / "best.json").exists()
    return run_dir


def predictions(cfg, state: dict) -> torch.Tensor:
    """A model's class predictions on the training split, in eval mode."""
    train = datasets.build_splits(cfg.dataset)["train"]
    x = torch.stack([train[i][0] for i in range(len(train))])
    model = models.build(cfg.model)
    model.load_state_dict(state)
    with torch.no_grad():
        return model.eval()(x).argmax(1)


def test_a_student_reaches_its_teacher_s_predictions_on_the_training_set(teacher, tmp_path):
    """The teacher: the trained run's best checkpoint with its output classes permuted, so that it disagrees with
    the labels everywhere; a student of it (alpha=1: the teachers' term alone) learns its answers, not the labels."""
    best = json.loads((teacher / "eval" / "best.json").read_text())
    state = checkpoint_files.load(teacher / best["checkpoint"])
    last_weight, last_bias = list(state["model"])[-2:]  # the classifier's
    shift = torch.roll(torch.arange(7), 1)
    state["model"][last_weight], state["model"][last_bias] = state["model"][last_weight][shift], state["model"][last_bias][shift]
    checkpoint_files.save_atomic(state, tmp_path / "permuted.pt")

    student_settings = [*TINY, *DISTILL, f"loss.teachers=[{tmp_path / 'permuted.pt'}]", "loss.alpha=1.0",
                        "trainer.seed=1", "trainer.epochs=8", "optimizer.lr=0.003"]
    train_job(compose_config(student_settings), tmp_path / "student")
    student_state = checkpoint_files.load(tmp_path / "student" / "checkpoints" / "epoch-0008.pt")["model"]
    cfg = compose_config(TINY)
    taught, learnt = predictions(cfg, state["model"]), predictions(cfg, student_state)
    labels = torch.tensor([int(y) for _, y in datasets.build_splits(cfg.dataset)["train"]])
    assert float((taught == labels).float().mean()) < 0.2  # the teacher disagrees with the labels
    agreement = float((learnt == taught).float().mean())
    print(f"student/teacher agreement on the training set: {agreement:.3f}")
    assert agreement > 0.9, agreement


def test_the_teachers_are_named_in_the_checkpoint_config_never_saved_in_it(teacher, tmp_path):
    checkpoint = sorted((teacher / "checkpoints").glob("epoch-*.pt"))[-1]
    train_job(compose_config([*TINY, *DISTILL, "trainer.epochs=1", f"loss.teachers=[{teacher},{checkpoint}]"]),
              tmp_path / "student")
    state = checkpoint_files.load(tmp_path / "student" / "checkpoints" / "epoch-0001.pt")
    plain = models.build(compose_config(TINY).model).state_dict()
    assert state["model"].keys() == plain.keys()
    teacher_weights = [w for w in checkpoint_files.load(checkpoint)["model"].values() if w.numel() > 1]
    assert not [key for key, tensor in tensors_in(state) if any(
        tensor.shape == w.shape and torch.equal(tensor, w) for w in teacher_weights)]
    assert state["config"]["loss"]["teachers"] == [str(teacher), str(checkpoint)]


def tensors_in(node, key: str = ""):
    if isinstance(node, torch.Tensor):
        yield key, node
    elif isinstance(node, dict):
        for child, value in node.items():
            yield from tensors_in(value, f"{key}.{child}")
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from tensors_in(value, f"{key}[{index}]")


def test_teachers_record_names_each_teacher_s_file_and_sha256(teacher):
    from runner.models.weights import sha256_of

    best = json.loads((teacher / "eval" / "best.json").read_text())
    record = teachers.teachers_record(compose_config([*TINY, *DISTILL, f"loss.teachers=[{teacher}:best]"]))
    assert record == [{"teacher": f"{teacher}:best", "checkpoint": str(teacher / best["checkpoint"]),
                       "weights": "model", "sha256": sha256_of(teacher / best["checkpoint"])}]
    assert teachers.teachers_record(compose_config(TINY)) is None


def test_a_resume_refuses_a_teacher_file_that_changed_since(teacher, tmp_path):
    copied = tmp_path / "teacher.pt"
    copied.write_bytes(sorted((teacher / "checkpoints").glob("epoch-*.pt"))[-1].read_bytes())
    cfg = compose_config([*TINY, *DISTILL, f"loss.teachers=[{copied}]"])
    recorded = teachers.teachers_record(cfg)
    teachers.refuse_changed_teachers(cfg, recorded)  # unchanged: fine
    state = checkpoint_files.load(copied)
    state["epoch"] += 1
    checkpoint_files.save_atomic(state, copied)
    with pytest.raises(UserError, match="changed since") as refused:
        teachers.refuse_changed_teachers(cfg, recorded)
    assert "\n" not in str(refused.value) and "Fix:" in str(refused.value)


def test_a_distilled_run_stopped_mid_epoch_resumes_bit_identical(teacher, tmp_path, monkeypatch):
    cfg = compose_config([*TINY, *DISTILL, f"loss.teachers=[{teacher}]", "trainer.deterministic=true",
                          "model.dropout=0.3", "trainer.epochs=3"])
    train_job(cfg, tmp_path / "straight")
    with monkeypatch.context() as patch:
        stop_at_step(patch, 3 + 2)  # in epoch 2 (30 samples in batches of 12: 3 updates an epoch)
        with pytest.raises(Preempted):
            train_job(cfg, tmp_path / "resumed")
    train_job(cfg, tmp_path / "resumed")
    straight = checkpoint_files.load(tmp_path / "straight" / "checkpoints" / "epoch-0003.pt")
    resumed = checkpoint_files.load(tmp_path / "resumed" / "checkpoints" / "epoch-0003.pt")
    assert_identical(straight["model"], resumed["model"])


def test_distillation_takes_mixup_s_soft_targets_and_mixed_images(teacher, tmp_path):
    cfg = compose_config([*TINY, *DISTILL, f"loss.teachers=[{teacher}]", "dataset.mixup.alpha=0.4", "trainer.epochs=1"])
    figures = train_job(cfg, tmp_path / "student")["train"]
    assert math.isfinite(figures["loss"]) and figures["loss"] > 0


def test_run_json_and_the_checkpoints_name_the_teachers_with_their_sha256(teacher, tmp_path):
    cfg = compose_config([*TINY, *DISTILL, f"loss.teachers=[{teacher}:best]", "trainer.epochs=1"])
    train_job(cfg, tmp_path / "student")
    recorded = json.loads((tmp_path / "student" / "run.json").read_text()).get("teachers")
    assert recorded == teachers.teachers_record(cfg) and recorded[0]["sha256"]
    state = checkpoint_files.load(tmp_path / "student" / "checkpoints" / "epoch-0001.pt")
    assert state["provenance"].get("teachers") == recorded


def test_a_resume_after_a_teacher_file_changed_is_refused(teacher, tmp_path):
    copied = tmp_path / "teacher.pt"
    copied.write_bytes(sorted((teacher / "checkpoints").glob("epoch-*.pt"))[-1].read_bytes())
    settings = [*TINY, *DISTILL, f"loss.teachers=[{copied}]"]
    train_job(compose_config([*settings, "trainer.epochs=1"]), tmp_path / "student")
    state = checkpoint_files.load(copied)
    state["epoch"] += 1
    checkpoint_files.save_atomic(state, copied)
    with pytest.raises(UserError, match="changed since"):
        train_job(compose_config([*settings, "trainer.epochs=2"]), tmp_path / "student")


# ---------------------------------------------------------------------------------------------
# refusals: one line each, before anything is written


def refusal(settings: list[str]) -> str:
    with pytest.raises(UserError) as refused:
        validate(compose_config([*TINY, *settings]))
    message = str(refused.value)
    assert "\n" not in message and "Fix:" in message, message
    return message


def test_no_teachers_is_refused():
    assert refusal(["loss=distill"]).startswith("loss.teachers=[] ")


@pytest.mark.parametrize("key, value", [("temperature", 0), ("temperature", -1.0), ("alpha", 1.5), ("alpha", -0.1)])
def test_a_temperature_or_alpha_out_of_range_is_refused(teacher, key, value):
    assert refusal(["loss=distill", f"loss.teachers=[{teacher}]", f"loss.{key}={value}"]).startswith(f"loss.{key}=")


def test_a_missing_teacher_is_refused(tmp_path):
    assert "does not exist" in refusal(["loss=distill", f"loss.teachers=[{tmp_path / 'nowhere'}]"])


def test_a_run_without_a_best_checkpoint_is_refused_with_the_evaluate_command(tmp_path):
    run_dir = tmp_path / "unevaluated"
    train_job(compose_config([*TINY, "trainer.epochs=1"]), run_dir)
    message = refusal(["loss=distill", f"loss.teachers=[{run_dir}:best]"])
    assert f"python -m runner.evaluate run_dir={run_dir}" in message


def test_an_untrusted_teacher_is_refused(teacher, tmp_path):
    state = checkpoint_files.load(sorted((teacher / "checkpoints").glob("epoch-*.pt"))[-1])
    state["config"]["model"]["_target_"] = "os.system"
    checkpoint_files.save_atomic(state, tmp_path / "evil.pt")
    message = refusal(["loss=distill", f"loss.teachers=[{tmp_path / 'evil.pt'}]"])
    assert "not trusted" in message and "os.system" in message


@pytest.mark.parametrize("student, problem", [
    (["dataset.num_classes=5"], "5 classes"),
    (["dataset.image_size=[12,13]"], "image size"),
    (["dataset.channels=1"], "channels"),
    (["dataset.mean=[0.5]"], "mean"),
])
def test_a_teacher_that_sees_other_images_or_classes_is_refused(teacher, student, problem):
    message = refusal([*student, "loss=distill", f"loss.teachers=[{teacher}]"])
    assert problem in message, message


@pytest.mark.slow
def test_the_command_refuses_a_missing_teacher_with_exit_2_and_writes_nothing(tmp_path):
    run_dir = tmp_path / "outputs" / "student"
    result = run_cli([*TINY, "loss=distill", f"loss.teachers=[{tmp_path / 'nowhere'}]", f"hydra.run.dir={run_dir}"],
                     cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "loss.teachers" in result.stdout + result.stderr
    assert not run_dir.exists()


def test_the_benchmark_times_the_teachers_forward_and_the_student_step():
    loss = distill.Distillation([nn.Linear(4, 3)], temperature=4.0, alpha=0.9)
    seconds = distill.step_seconds(loss, nn.Linear(4, 3), torch.randn(8, 4), torch.randint(0, 3, (8,)), repeats=2)
    assert set(seconds) == {"teacher_forward", "student_step"} and all(s > 0 for s in seconds.values())


@pytest.mark.slow
def test_a_teacher_whose_best_row_is_its_swa_weights_predicts_as_that_row(tmp_path):
    """The evaluator measured the SWA row after recomputing its BatchNorm statistics over the training split (they
    are not saved): a RUN:best teacher of that row must predict as the row did, not with the raw statistics."""
    from runner.data.loaders import eval_loader
    from runner.evaluation import predictions as saved_predictions

    run_dir = tmp_path / "swa-teacher"
    common = ["dataset=synthetic", "dataset.image_size=[32,32]", "dataset.train_size=60", "dataset.val_size=20",
              "dataset.test_size=10", "model=resnet18", "trainer.epochs=2", "trainer.batch_size=20",
              "trainer.micro_batch_size=20", "checkpoint.every_epochs=1", "trainer.device=cpu"]
    train_job(compose_config([*common, "trainer.swa.start_epoch=1", "optimizer.lr=0.01"]), run_dir)
    rows = [json.loads(line) for line in (run_dir / "eval" / "metrics.jsonl").read_text().splitlines()]
    swa = next(row for row in rows if row.get("weights") == "swa" and row["checkpoint"].endswith("0002.pt"))
    best = json.loads((run_dir / "eval" / "best.json").read_text())
    (run_dir / "eval" / "best.json").write_text(json.dumps({**best, "checkpoint": swa["checkpoint"], "weights": "swa",
                                                            "metrics": swa}))  # a run whose best row is its swa
    expected, labels = saved_predictions.load_row_predictions(run_dir / "eval", swa)

    teacher = distill.distillation([f"{run_dir}:best"]).teachers[0]
    val = datasets.build_splits(compose_config(common).dataset)["val"]
    with torch.no_grad():
        got = torch.cat([teacher(x).float().log_softmax(dim=1) for x, _ in eval_loader(val, 20, 0, False)])
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()

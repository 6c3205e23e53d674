"""Test-time augmentation: tta=none|flip|translate|flip+translate|multicrop (issue 26).

Each view set against a hand-written reference on a fixed linear model over the pixels (its
probabilities are a known function of the input): the shifted images built pixel by pixel with
explicit reflected indices, the five crops with torchvision v2's five_crop and resize. Then what
a user sees: each tta its own row, its own predictions file, its own best beside the run's,
a run that evaluates with a tta of its own, and an ensemble evaluated with one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from runner.cli.evaluate import evaluate
from runner.common.errors import UserError
from runner.evaluation import results
from runner.evaluation.inference import TTA, predict
from runner.evaluation.run_table import table
from runner.evaluation.settings import validate
from runner.run import train_and_evaluate
from runner.training.job import train_job
from tests.conftest import TINY, compose_config

CLASSES, HEIGHT, WIDTH = 5, 11, 13


def linear_model() -> torch.nn.Module:
    """A fixed linear map of the pixels to the classes: its probabilities on any view are computable by hand."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * HEIGHT * WIDTH, CLASSES))
    with torch.no_grad():
        model[1].weight.mul_(8)  # confident enough that the views disagree visibly
    return model.eval()


def images(n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, HEIGHT, WIDTH, generator=generator), torch.arange(n) % CLASSES


def reflected(index: int, size: int) -> int:
    """Reflect padding's source index (the edge pixel is not repeated): -1 -> 1, size -> size - 2."""
    return -index if index < 0 else 2 * (size - 1) - index if index >= size else index


def shifted(x: torch.Tensor, down: int, right: int) -> torch.Tensor:
    """The image moved `down` rows and `right` columns, the uncovered edge filled by reflection, pixel by pixel."""
    out = torch.empty_like(x)
    for i in range(HEIGHT):
        for j in range(WIDTH):
            out[..., i, j] = x[..., reflected(i - down, HEIGHT), reflected(j - right, WIDTH)]
    return out


def mean_probabilities(model, weighted_views) -> torch.Tensor:
    """log of sum_k w_k softmax(model(view_k)): the reference, in plain probabilities."""
    with torch.no_grad():
        return sum(weight * model(view).softmax(1) for view, weight in weighted_views).log()


def predicted(model, x, y, tta: str, batch: int = 3) -> torch.Tensor:
    batches = [(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)]
    log_probs, labels = predict(model, batches, torch.device("cpu"), None, tta)
    assert torch.equal(labels, y)
    return log_probs


def test_every_tta_is_a_known_setting_and_others_are_refused_in_one_line():
    settings = compose_config([], config_name="evaluate")
    for tta in TTA:
        settings.tta = tta
        validate(settings)
    settings.tta = "rotate"
    with pytest.raises(UserError) as refused:
        validate(settings)
    assert "Fix: tta=none|flip|translate|flip+translate|multicrop" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_translate_is_airbenchs_half_the_image_and_a_quarter_each_one_pixel_shift():
    model, (x, y) = linear_model(), images()
    expected = mean_probabilities(model, [(x, 0.5), (shifted(x, 1, 1), 0.25), (shifted(x, -1, -1), 0.25)])
    torch.testing.assert_close(predicted(model, x, y, "translate"), expected, rtol=1e-5, atol=1e-6)


def test_flip_translate_is_the_flip_average_of_the_image_and_of_each_shift():
    model, (x, y) = linear_model(), images()
    views = [(x, 0.5), (shifted(x, 1, 1), 0.25), (shifted(x, -1, -1), 0.25)]
    expected = mean_probabilities(model, [(v, w / 2) for view, w in views for v in (view, view.flip(-1))])
    torch.testing.assert_close(predicted(model, x, y, "flip+translate"), expected, rtol=1e-5, atol=1e-6)
    # the combination: the flip of each translate view, weighted as translate weighs the view
    flip = predicted(model, x, y, "flip").exp()
    flip_of_shifts = [predicted(model, shifted(x, d, d), y, "flip").exp() for d in (1, -1)]
    combined = (0.5 * flip + 0.25 * flip_of_shifts[0] + 0.25 * flip_of_shifts[1]).log()
    torch.testing.assert_close(predicted(model, x, y, "flip+translate"), combined, rtol=1e-5, atol=1e-6)


def test_multicrop_is_torchvisions_five_crops_of_seven_eighths_resized_back():
    model, (x, y) = linear_model(), images()
    crop = [round(HEIGHT * 7 / 8), round(WIDTH * 7 / 8)]  # 10 x 11
    crops = TF.five_crop(x, crop)
    views = [(TF.resize(c, [HEIGHT, WIDTH], interpolation=TF.InterpolationMode.BILINEAR, antialias=False), 1 / 5)
             for c in crops]
    torch.testing.assert_close(predicted(model, x, y, "multicrop"), mean_probabilities(model, views),
                               rtol=1e-5, atol=1e-6)


def test_flip_and_none_are_unchanged():
    model, (x, y) = linear_model(), images()
    torch.testing.assert_close(predicted(model, x, y, "none"), mean_probabilities(model, [(x, 1.0)]))
    torch.testing.assert_close(predicted(model, x, y, "flip"), mean_probabilities(model, [(x, .5), (x.flip(-1), .5)]))


@pytest.mark.parametrize("tta", TTA)
def test_a_sample_gets_the_same_prediction_in_a_batch_of_three_as_alone(tta):
    model, (x, y) = linear_model(), images()
    # not bit for bit: the matrix multiply itself sums in another order for another batch size (1e-6 here)
    torch.testing.assert_close(predicted(model, x, y, tta, batch=3), predicted(model, x, y, tta, batch=1),
                               rtol=1e-6, atol=1e-5)


def test_views_under_autocast_give_float32_log_probabilities():
    model, (x, y) = linear_model(), images()
    batches = [(x[:3], y[:3]), (x[3:], y[3:])]
    for tta in TTA:
        log_probs, _ = predict(model, batches, torch.device("cpu"), torch.bfloat16, tta)
        assert log_probs.dtype == torch.float32
        torch.testing.assert_close(log_probs.exp().sum(1), torch.ones(len(x)), rtol=0, atol=1e-5)
        close = (log_probs.argmax(1) == predicted(model, x, y, tta).argmax(1)).float().mean()
        assert close >= 0.8, tta  # bf16 moves a few near ties at most


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("tta") / "run"
    train_and_evaluate(compose_config([*TINY, "model=linear", "evaluate.after_training=true"]), run_dir)
    return run_dir


def test_each_tta_is_its_own_row_predictions_file_and_best_beside_the_runs(evaluated):
    own_best = (evaluated / "eval" / "best.json").read_text()
    for tta in ("translate", "flip+translate", "multicrop"):
        evaluate(compose_config([f"run_dir={evaluated}", f"tta={tta}"], config_name="evaluate"))
        rows = [r for r in results.read_rows(evaluated / "eval") if r["tta"] == tta]
        assert [r["variant"] for r in rows] == [f"tta={tta}"] * 2, rows  # both checkpoints, labelled
        assert all((evaluated / "eval" / "predictions" / f"{Path(r['checkpoint']).stem}.val.{tta}.pt").is_file()
                   for r in rows)
        beside = json.loads((evaluated / "eval" / f"best.{results.variant_slug(f'tta={tta}')}.json").read_text())
        assert beside["tta"] == tta and beside["variant"] == f"tta={tta}"
    assert (evaluated / "eval" / "best.json").read_text() == own_best  # the run's own result, untouched
    lines = (evaluated / "eval" / "metrics.jsonl").read_text().splitlines()
    assert {json.loads(line)["tta"] for line in lines} == {"none", "translate", "flip+translate", "multicrop"}
    shown = table(evaluated.parent)[0]["other"]
    assert all(f"tta={tta}:" in shown for tta in ("translate", "flip+translate", "multicrop")), shown


def test_a_run_that_evaluates_with_a_tta_of_its_own(tmp_path):
    run_dir = tmp_path / "run"
    train_and_evaluate(compose_config([*TINY, "model=linear", "evaluate.after_training=true",
                                       "evaluate.galleries=false", "evaluate.tta=translate"]), run_dir)
    best = json.loads((run_dir / "eval" / "best.json").read_text())
    assert best["tta"] == "translate" and best["variant"] == ""
    assert (run_dir / "eval" / "predictions" / "epoch-0002.val.translate.pt").is_file()
    from runner.compare import cli

    # compare of two of its checkpoints pairs their rows of the run's own tta
    cli([str(run_dir / "checkpoints" / "epoch-0001.pt"), str(run_dir / "checkpoints" / "epoch-0002.pt"),
         f"out={tmp_path / 'compare'}"])
    text = (tmp_path / "compare" / "compare.md").read_text()
    assert "## Paired, on the same 14 val samples" in text and "at checkpoints/epoch-0002.pt" in text


def test_an_ensemble_evaluated_with_translate_averages_its_members_translate_predictions(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    runs = []
    for seed in (1, 2):
        train_job(compose_config([*TINY, "model=linear", f"trainer.seed={seed}"]), tmp_path / f"seed{seed}")
        runs.append(tmp_path / f"seed{seed}")
    result = evaluate(compose_config([f"ensemble=[{runs[0]},{runs[1]}]", "tta=translate"], config_name="evaluate"))
    written = json.loads(next((tmp_path / "outputs" / "ensembles").glob("*/ensemble.val.json")).read_text())
    assert written["tta"] == "translate"
    members = []
    for run, member in zip(runs, written["members"], strict=True):
        assert member["member"].startswith(f"{run.name}/checkpoints/")  # each run's best under tta=translate
        members.append(torch.load(run / "eval" / "predictions" / f"{Path(member['member']).stem}.val.translate.pt",
                                  weights_only=True))
    mean = (members[0]["log_probabilities"].exp() + members[1]["log_probabilities"].exp()) / 2
    assert result["top1"] == pytest.approx(float((mean.argmax(1) == members[0]["labels"]).float().mean()))
    assert result["loss"] == pytest.approx(float(-mean.log().gather(1, members[0]["labels"][:, None]).mean()),
                                           rel=1e-5)
    assert not math.isnan(result["loss"])

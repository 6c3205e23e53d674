"""python -m runner.label: the human baseline. The seeded choice of samples, the answers folder (append-only,
resumable), human top-1 with its interval and the paired comparison with a run, by hand; the refusals; and the
labeling page itself in headless Chromium (a real browser), driven by key presses."""

from __future__ import annotations

import io
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from runner.common.errors import UserError
from runner.evaluation import human
from tests.conftest import cli_env, make_imagefolder


def wilson(k: int, n: int, z: float = 1.959964) -> list[float]:
    """The Wilson score interval, written out again here as the reference."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return [centre - half, centre + half]


def test_the_samples_are_a_seeded_class_balanced_choice_in_shuffled_order():
    labels = [0] * 10 + [1] * 10 + [2] * 2
    chosen = human.choose_samples(labels, 6, seed=0)
    assert sorted(Counter(labels[i] for i in chosen).values()) == [2, 2, 2]  # two of each class
    nine = Counter(labels[i] for i in human.choose_samples(labels, 9, seed=0))
    assert nine[2] == 2 and abs(nine[0] - nine[1]) <= 1 and sum(nine.values()) == 9  # class 2 gives all it has
    assert human.choose_samples(labels, 9, seed=0) == human.choose_samples(labels, 9, seed=0)
    assert human.choose_samples(labels, 9, seed=1) != human.choose_samples(labels, 9, seed=0)
    # not in index order (a split stored class by class would tell the answer), nor the classes in turns
    many = human.choose_samples(list(range(10)) * 20, 100, seed=0)
    assert many != sorted(many) and len(set(many)) == 100
    assert [many[k] % 10 for k in range(10)] != [many[k + 10] % 10 for k in range(10)]


def manifest(indices, labels, split_size=8, classes=("a", "b", "c")) -> dict:
    return {"dataset": "toy", "split": "val", "n": len(indices), "seed": 0, "split_size": split_size,
            "classes": list(classes), "samples": [{"index": i, "label": y, "name": f"#{i}"}
                                                  for i, y in zip(indices, labels, strict=True)]}


def test_human_top1_and_its_interval_by_hand_over_the_answered_samples(tmp_path):
    folder = tmp_path / "answers"
    human.open_answers(folder, manifest([5, 0, 3, 7, 2], [2, 0, 0, 1, 2]))
    for position, answer in [(0, 2), (1, 0), (2, 1), (3, 1)]:  # right, right, wrong, right; the fifth unanswered
        human.record_answer(folder, position, answer)
    with (folder / "answers.jsonl").open("a") as torn:  # a writer killed mid-line
        torn.write('{"sample": 4, "ans')
    score = human.human_top1(folder)
    assert score["answered"] == 4 and score["n"] == 5 and score["correct"] == 3
    assert score["top1"] == 0.75
    assert score["top1_ci95"] == pytest.approx(wilson(3, 4))
    assert score["top1_ci95"] == pytest.approx([0.3006, 0.9544], abs=1e-4)
    assert human.next_unanswered(folder) == 4
    human.record_answer(folder, 4, 0)  # after the torn line: a whole new line
    assert human.human_top1(folder)["answered"] == 5 and human.next_unanswered(folder) is None


def test_an_answer_is_kept_once_and_must_be_a_class(tmp_path):
    folder = tmp_path / "answers"
    human.open_answers(folder, manifest([5, 0], [2, 0]))
    human.record_answer(folder, 0, 1)
    with pytest.raises(UserError, match="already answered"):
        human.record_answer(folder, 0, 2)
    with pytest.raises(UserError, match="not a class"):
        human.record_answer(folder, 1, 3)
    with pytest.raises(UserError, match="no sample 2"):
        human.record_answer(folder, 2, 0)
    assert [json.loads(line)["answer"] for line in (folder / "answers.jsonl").read_text().splitlines()] == [1]


def test_an_answers_folder_of_other_samples_is_refused_in_one_line(tmp_path):
    folder = tmp_path / "answers"
    human.open_answers(folder, manifest([5, 0], [2, 0]))
    human.open_answers(folder, manifest([5, 0], [2, 0]))  # the same samples again: resumed
    with pytest.raises(UserError) as refused:
        human.open_answers(folder, manifest([5, 1], [2, 1]))
    assert "other samples" in str(refused.value) and "Fix: answers=" in str(refused.value)
    assert "\n" not in str(refused.value)


def constructed_run(tmp_path: Path, predicted: list[int], labels: list[int]) -> Path:
    """A run folder with an evaluated best checkpoint: its best.json and saved predictions."""
    from runner.evaluation import predictions, results

    run = tmp_path / "run"
    eval_dir = results.eval_dir_of(run)
    row = {"checkpoint": "checkpoints/epoch-0002.pt", "epoch": 2, "split": "val", "tta": "none", "n": len(labels),
           "top1": float(np.mean(np.array(predicted) == np.array(labels)))}
    log_probs = torch.log_softmax(torch.nn.functional.one_hot(torch.tensor(predicted), 3).float() * 5, dim=1)
    predictions.save_predictions(eval_dir, row, log_probs, torch.tensor(labels))
    results.write_best(eval_dir, row, "top1", "max", None)
    return run


def test_human_against_a_run_paired_on_the_same_samples_by_hand(tmp_path):
    split_labels = [0, 1, 2, 0, 1, 2, 0, 1]
    run = constructed_run(tmp_path, predicted=[0, 2, 2, 1, 1, 0, 0, 0], labels=split_labels)
    folder = tmp_path / "answers"
    human.open_answers(folder, manifest([5, 0, 3, 7, 2], [2, 0, 0, 1, 2]))
    for position, answer in [(0, 2), (1, 0), (2, 1), (3, 1)]:
        human.record_answer(folder, position, answer)
    assert human.is_answers_folder(folder) and not human.is_answers_folder(run)
    row = human.human_vs_run(folder, run)
    # on the 4 answered samples (split indices 5, 0, 3, 7): the human is right on 5, 0, 7; the model on 0 alone
    assert row["n"] == 4 and row["human_top1"] == 0.75 and row["model_top1"] == 0.25
    assert row["human_top1_ci95"] == pytest.approx(wilson(3, 4))
    assert row["only_human_right"] == 2 and row["only_model_right"] == 0
    assert row["p_value"] == pytest.approx(2 * 0.5**2)  # exact McNemar: 2 discordant samples, both the human's
    assert row["difference"] == pytest.approx(0.25 - 0.75)  # the model minus the human
    assert row["checkpoint"] == "checkpoints/epoch-0002.pt" and row["split"] == "val"

    other = constructed_run(tmp_path / "other", predicted=[0] * 9, labels=[0, 1, 2, 0, 1, 2, 0, 1, 2])
    with pytest.raises(UserError, match="other samples"):
        human.human_vs_run(folder, other)


def test_stored_items_are_served_as_stored(tmp_path):
    from runner.evaluation.labeling_page import image_bytes

    jpeg = tmp_path / "flower.jpg"
    Image.fromarray(np.full((6, 5, 3), 200, np.uint8)).save(jpeg)
    assert image_bytes(jpeg, [0.0], [1.0]) == (jpeg.read_bytes(), "image/jpeg")  # the file's own bytes
    standardized = (torch.full((1, 2, 3), 0.25) - 0.5) / 0.25  # pixel value 0.25 standardized with mean 0.5, std 0.25
    data, kind = image_bytes(standardized, [0.5], [0.25])
    assert kind == "image/png"
    assert np.array(Image.open(io.BytesIO(data))).tolist() == [[64, 64, 64], [64, 64, 64]]  # round(0.25 * 255)


def refusal(argv: list[str], tmp_path: Path, monkeypatch, capsys) -> str:
    from runner.cli.label import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["runner.label", *argv])
    with pytest.raises(SystemExit) as stopped:
        cli()
    assert stopped.value.code == 2
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1 and " ERROR " in lines[0], lines
    assert not (tmp_path / "outputs").exists()  # refused before Hydra makes a folder
    return lines[0]


@pytest.mark.parametrize(("argv", "said"), [
    (["n=0"], "n=0 is not a number of samples of at least 1. Fix: n=100"),
    (["split=train"], "split='train' is not a split to label. Fix: split=val or split=test"),
    (["port=70000"], "port=70000 is not a port. Fix: port=0 (a free one) or 1024..65535"),
    (["examples=x"], "examples='x' is not a whole number. Fix: examples=3"),
    (["trainer.epoch=3"], "trainer.epoch is not a setting"),
])
def test_bad_settings_are_refused_in_one_line_before_anything_is_written(argv, said, tmp_path, monkeypatch, capsys):
    assert said in refusal(argv, tmp_path, monkeypatch, capsys)


CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture
def browser():
    """Headless Chromium through selenium, with Debian's driver (selenium never downloads one here)."""
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("Chromium is not installed: scripts/install_browser.sh installs it (and chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed: pip install selenium")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,700"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def address_of(command: subprocess.Popen) -> str:
    """The page's address, from the command's log line (it picked a free port)."""
    for line in command.stdout:
        if "http://127.0.0.1:" in line:
            return "http://" + line.split("http://", 1)[1].split()[0]
    raise AssertionError(f"runner.label stopped without serving (exit {command.wait()})")


def press(driver, keys: str, progress: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    ActionChains(driver).send_keys(keys).perform()
    WebDriverWait(driver, 20).until(lambda d: progress in d.find_element("id", "progress").text)


@pytest.mark.slow  # about 17 s: the command's start (torch, Hydra, the data) and Chromium's
def test_labeling_in_a_real_browser_saves_each_answer_resumes_after_a_reload_and_scores(browser, tmp_path):
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    make_imagefolder(tmp_path / "images" / "train", classes=3, per_class=3)
    make_imagefolder(tmp_path / "images" / "val", classes=3, per_class=2)
    command = subprocess.Popen(
        [sys.executable, "-m", "runner.label", "dataset=imagefolder", f"dataset.root={tmp_path / 'images'}",
         "dataset.image_size=[16,16]", "split=val", "n=6"],
        cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        browser.get(address_of(command))
        WebDriverWait(browser, 20).until(lambda d: "sample 1 of 6" in d.find_element("id", "progress").text)
        folder = tmp_path / "outputs" / "labels" / "imagefolder_val_n6_seed0"
        truth = [s["label"] for s in json.loads((folder / "manifest.json").read_text())["samples"]]
        assert sorted(truth) == [0, 0, 1, 1, 2, 2]  # class-balanced
        assert len(browser.find_elements("css selector", "#classes img")) == 9  # 3 training examples of each class
        given = [truth[0], truth[1], (truth[2] + 1) % 3, truth[3]]  # the third answer wrong
        for position, answer in enumerate(given):
            press(browser, str(answer), f"sample {position + 2} of 6")
        press(browser, f"ss_{truth[4]}" + Keys.ENTER, "sample 6 of 6")  # typed to filter the names, Enter answers
        given.append(truth[4])
        saved = [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines()]
        assert [(a["sample"], a["answer"]) for a in saved] == list(enumerate(given))  # saved as they were given
        browser.refresh()  # resumes at the sixth
        WebDriverWait(browser, 20).until(lambda d: "sample 6 of 6 (5 answered)" in d.find_element("id", "progress").text)
        assert browser.find_element("id", "sample").get_attribute("src").endswith("/sample/5")
        press(browser, str(truth[5]), "done: 6 of 6 answered")
        message = browser.find_element("id", "message").text
        assert "Your top-1 on these 6: 83.3% (95% interval 43.6% to 97.0%)" in message, message
        output = command.communicate(timeout=60)[0]
    finally:
        command.kill()
    assert command.returncode == 0, output
    assert f"human top-1 on these 6 val samples: 0.8333 (95% interval [{wilson(5, 6)[0]:.4f}" in output, output
    assert human.human_top1(folder)["correct"] == 5


def test_the_page_serves_state_samples_and_answers_and_refuses_a_second_answer(tmp_path):
    import threading
    import urllib.error
    import urllib.request

    from runner.evaluation.labeling_page import Session, open_server, serve

    folder = tmp_path / "answers"
    human.open_answers(folder, manifest([5, 0], [2, 0]))
    session = Session(folder, "toy val", sample=lambda k: (b"sample %d" % k, "image/png"),
                      reference=lambda c, j: (b"reference %d %d" % (c, j), "image/png"), examples=[1, 1, 0])
    server = open_server(session, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"

    def post(sample: int, answer: int) -> dict:
        request = urllib.request.Request(f"{url}/answer", json.dumps({"sample": sample, "answer": answer}).encode())
        try:
            return json.loads(urllib.request.urlopen(request).read())
        except urllib.error.HTTPError as refused:
            assert refused.code == 409
            return json.loads(refused.read())

    try:
        state = json.loads(urllib.request.urlopen(f"{url}/state").read())
        assert (state["next"], state["n"], state["classes"], state["score"]) == (0, 2, ["a", "b", "c"], None)
        assert urllib.request.urlopen(f"{url}/sample/1").read() == b"sample 1"
        assert urllib.request.urlopen(f"{url}/reference/1/0").read() == b"reference 1 0"
        assert "<script>" in urllib.request.urlopen(url).read().decode()  # one page, nothing from outside
        assert post(0, 2)["next"] == 1
        assert "already answered" in post(0, 1)["error"]
        done = post(1, 1)
        assert done["next"] is None and done["score"]["top1"] == 0.5 and session.finished.is_set()
    finally:
        server.shutdown()
        server.server_close()
    assert serve(session, 0)["answered"] == 2  # all answered: the same command again serves nothing, scores


def test_compare_puts_the_human_beside_the_run_on_the_same_samples(tmp_path, capsys):
    from runner.cli.compare import cli as compare

    run = constructed_run(tmp_path, predicted=[0, 2, 2, 1, 1, 0, 0, 0], labels=[0, 1, 2, 0, 1, 2, 0, 1])
    folder = tmp_path / "answers"
    human.open_answers(folder, manifest([5, 0, 3, 7, 2], [2, 0, 0, 1, 2]))
    for position, answer in [(0, 2), (1, 0), (2, 1), (3, 1)]:
        human.record_answer(folder, position, answer)
    compare([str(run), str(folder), f"out={tmp_path / 'cmp'}"])  # either order
    text = (tmp_path / "cmp" / "compare.md").read_text()
    assert "same 4 val samples" in text and "| human" in text and "| 0.7500 |" in text and "| 0.2500 |" in text
    assert "Model minus human: -0.5000" in text and "p = 0.5" in text
    assert text in capsys.readouterr().out


def test_runs_lists_the_human_beside_the_runs(tmp_path, capsys):
    from runner.cli.runs import cli as runs

    folder = tmp_path / "labels" / "digits_val_n5_seed0"
    human.open_answers(folder, manifest([5, 0, 3, 7, 2], [2, 0, 0, 1, 2]))
    for position, answer in [(0, 2), (1, 0), (2, 1), (3, 1)]:
        human.record_answer(folder, position, answer)
    runs([str(tmp_path), "format=csv"])
    lines = capsys.readouterr().out.splitlines()
    row = next(line for line in lines if line.split(",")[1:2] == ["human"])
    assert "labelled 4/5" in row and ",0.7500," in row and "on 4 toy val samples" in row


@pytest.mark.parametrize("column", ["start", "git", "overrides", "epochs", "checkpoint", "-start", "name", "best"])
def test_the_human_row_has_every_runs_table_column_so_any_sort_works(tmp_path, column):
    from runner.evaluation.run_table import COLUMNS, sorted_rows

    folder = tmp_path / "labels" / "flowers_val_n2_seed0"
    human.open_answers(folder, manifest([5, 0], [2, 0]))
    human.record_answer(folder, 0, 2)
    rows = human.human_rows(tmp_path)
    assert len(rows) == 1 and set(COLUMNS) <= set(rows[0])
    run = {c: "x" for c in COLUMNS} | {"best": 0.5, "epochs": "2/2", "start": "2026-12-04 00:00:00"}
    assert len(sorted_rows(rows + [run], column, COLUMNS, "best")) == 2


def test_answers_that_is_a_file_or_a_run_folder_is_refused_before_anything_is_written(tmp_path):
    from runner.cli.label import HELP, label_settings
    from runner.common.errors import UserError

    file, run, other = tmp_path / "notes.txt", tmp_path / "run", tmp_path / "run2"
    file.write_text("x")
    (run / "eval").mkdir(parents=True)
    other.mkdir()
    (other / "run.json").write_text("{}")
    for path in (file, run, other):
        with pytest.raises(UserError, match="Fix: answers="):
            label_settings([f"answers={path}"])
    assert sorted(p.name for p in run.iterdir()) == ["eval"] and sorted(p.name for p in other.iterdir()) == ["run.json"]
    assert label_settings([f"answers={tmp_path / 'new'}"])[0]["answers"] == str(tmp_path / "new")
    assert "python -m runner.compare ANSWERS RUN" in HELP and "human_vs_run" not in HELP


def test_the_page_refuses_a_non_integer_answer_and_a_negative_or_huge_sample(tmp_path):
    import threading
    import urllib.error
    import urllib.request

    from runner.common.errors import UserError
    from runner.evaluation.labeling_page import Session, open_server

    folder = tmp_path / "answers"
    human.open_answers(folder, manifest([5, 0], [2, 0]))
    session = Session(folder, "toy val", sample=lambda k: (b"sample %d" % [5, 0][k], "image/png"),
                      reference=lambda c, j: (b"r", "image/png"), examples=[1, 1, 0])
    for body in (b'{"sample": 0, "answer": 1.9}', b'{"sample": 1e400, "answer": 1}', b'{"sample": 0, "answer": true}',
                 b'{"sample": 0.0, "answer": 1}'):
        with pytest.raises(UserError, match="Fix: reload the page"):
            session.answer(body)
    assert human.read_answers(folder) == {}
    server = open_server(session, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        for bad in ("-1", "1e400", "99999999999999999999999", "+1"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{url}/sample/{bad}")
            assert refused.value.code == 404
        request = urllib.request.Request(f"{url}/answer", b'{"sample": 0, "answer": 1.9}')
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request)
        assert refused.value.code == 409
    finally:
        server.shutdown()
        server.server_close()

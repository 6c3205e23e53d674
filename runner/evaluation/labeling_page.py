"""python -m runner.label +experiment=flowers split=val n=100: the labeling page, served on 127.0.0.1.

One self-contained page (inline HTML, CSS and JavaScript: nothing from outside) shows the samples
one by one as stored, beside the class list with a few training examples of each; a key press
answers (a digit where there are at most 10 classes; else type a number or part of a name, the
arrows choose, Enter answers). Each answer is POSTed and saved before the next sample shows
(evaluation/human.py keeps them), so a reload, or the same command again, goes on at the first
unanswered sample. When the last is answered, the page and the terminal show the score and the
server stops.

    GET /            the page                        GET /state        progress, classes, the score when done
    GET /sample/K    the K-th sample shown           GET /reference/C/J  training example J of class C
    POST /answer     {"sample": K, "answer": C}
"""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

from runner.common.errors import UserError, one_line
from runner.evaluation import human

log = logging.getLogger("runner.label")

# formats a browser shows as they are; others (TIFF, PPM, ...) are sent as a PNG rendering
BROWSER_FORMATS = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".gif": "image/gif",
                   ".webp": "image/webp", ".bmp": "image/bmp"}


def image_bytes(item, mean: list[float], std: list[float]) -> tuple[bytes, str]:
    """(bytes, content type) of a stored item: a browser-readable file's own bytes; else a PNG of its pixels (a
    PIL image, a uint8 array, or a standardized tensor brought back to 0..255)."""
    from runner.data import transforms  # torch: the command has it loaded already

    if isinstance(item, (str, Path)):
        kind = BROWSER_FORMATS.get(Path(item).suffix.lower())
        if kind is not None:
            return Path(item).read_bytes(), kind
        item = transforms.load_image(item)
    if isinstance(item, Image.Image):
        image = transforms.as_rgb(item, "a stored image")
    else:
        if not isinstance(item, np.ndarray):  # a standardized (channels, height, width) tensor
            item = (transforms.denormalize(item, mean, std).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        image = Image.fromarray(item[..., 0] if item.shape[-1] == 1 else item)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), "image/png"


@dataclass
class Session:
    """What the page serves: the answers folder, the samples and reference examples as (bytes, type)."""

    folder: Path
    title: str
    sample: Callable[[int], tuple[bytes, str]]  # by position shown
    reference: Callable[[int, int], tuple[bytes, str]]  # (class, example)
    examples: list[int]  # reference examples available per class
    finished: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def state(self) -> dict:
        manifest = human.read_manifest(self.folder)
        next_sample = human.next_unanswered(self.folder)
        return {"title": self.title, "n": len(manifest["samples"]), "classes": manifest["classes"],
                "examples": self.examples, "next": next_sample, "answers": str(self.folder),
                "answered": len(human.read_answers(self.folder)),
                "score": human.human_top1(self.folder) if next_sample is None else None}

    def answer(self, body: bytes) -> dict:
        try:
            given = json.loads(body)
            position, answer = whole(given["sample"]), whole(given["answer"])
        except (ValueError, KeyError, TypeError) as error:
            raise UserError(f"an answer is {{\"sample\": K, \"answer\": C}} ({type(error).__name__}). "
                            "Fix: reload the page") from None
        with self.lock:  # two tabs: one answer per sample
            human.record_answer(self.folder, position, answer)
            state = self.state()
        if state["next"] is None:
            self.finished.set()
        return state


def whole(value) -> int:
    """A JSON whole number (1.9, true, "1" or 1e400 are not: int() would truncate, convert or overflow)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not a whole number")
    return value


def place(text: str) -> int:
    """A position in a URL: ASCII digits only (-1 would be the last one, Python's index from the end)."""
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{text!r} is not a position")
    return int(text)


class Handler(BaseHTTPRequestHandler):
    session: Session  # set on the subclass serve() makes

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        parts = self.path.split("?")[0].strip("/").split("/")
        try:
            if parts == [""]:
                self.send(PAGE.encode(), "text/html; charset=utf-8")
            elif parts == ["state"]:
                self.send(json.dumps(self.session.state()).encode(), "application/json")
            elif parts[0] == "sample" and len(parts) == 2:
                self.send(*self.session.sample(place(parts[1])))
            elif parts[0] == "reference" and len(parts) == 3:
                self.send(*self.session.reference(place(parts[1]), place(parts[2])), cache=True)
            else:
                self.send_error(404)
        except (ValueError, IndexError, UserError) as error:
            self.send_error(404, one_line(error) if isinstance(error, UserError) else None)

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/answer":
            self.send_error(404)
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            self.send(json.dumps(self.session.answer(body)).encode(), "application/json")
        except UserError as error:
            self.send(json.dumps({"error": one_line(error)}).encode(), "application/json", status=409)

    def send(self, data: bytes, kind: str, cache: bool = False, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (http.server's name)
        log.debug(format, *args)  # not a line per image on the terminal


def open_server(session: Session, port: int) -> ThreadingHTTPServer:
    """The page's server on 127.0.0.1:port (0: a free one), not yet serving."""
    handler = type("SessionHandler", (Handler,), {"session": session})
    try:
        return ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as error:
        raise UserError(f"port={port} cannot be served ({error.strerror}). Fix: port=0 (a free one)") from None


def serve(session: Session, port: int) -> dict:
    """Serve the page until every sample is answered or Ctrl-C; the score. Nothing to serve when all are answered."""
    state = session.state()
    if state["next"] is None:
        log.info("every one of the %d samples in %s is answered", state["n"], session.folder)
        return human.human_top1(session.folder)
    server = open_server(session, port)
    port = server.server_address[1]
    log.info("label %s at http://127.0.0.1:%d/ (%d of %d answered; a reload or the same command goes on at the "
             "first unanswered)", session.title, port, state["answered"], state["n"])
    log.info("on another machine: ssh -L %d:127.0.0.1:%d HOST, then open that address here", port, port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        session.finished.wait()
    except KeyboardInterrupt:
        log.info("stopped: the answers so far are kept in %s", session.folder)
    finally:
        server.shutdown()
        server.server_close()  # waits for the last answer's reply to go out
    return human.human_top1(session.folder)


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>runner.label</title>
<style>
body { font: 15px system-ui, sans-serif; margin: 0; display: flex; flex-direction: column; height: 100vh; }
header { padding: 8px 16px; background: #234; color: #fff; display: flex; gap: 24px; align-items: baseline; }
main { display: flex; flex: 1; min-height: 0; }
#left { flex: 1; display: flex; flex-direction: column; align-items: center; justify-content: center; padding: 16px; }
#sample { border: 1px solid #999; }
#right { width: 460px; display: flex; flex-direction: column; border-left: 1px solid #ccc; }
#filter { font-size: 18px; margin: 8px; padding: 6px; }
#classes { overflow-y: auto; flex: 1; margin: 0; padding: 0; list-style: none; }
#classes li { display: flex; align-items: center; gap: 8px; padding: 4px 8px; cursor: pointer; }
#classes li.chosen { background: #fd6; }
#classes li .name { flex: 1; }
#classes img { width: 64px; height: 64px; object-fit: contain; background: #eee; }
#help { color: #555; font-size: 13px; margin: 4px 8px; }
#message { font-size: 20px; margin-top: 16px; max-width: 640px; text-align: center; }
</style></head><body>
<header><b id="title"></b><span id="progress"></span></header>
<main><div id="left"><img id="sample" alt="the sample to label"><div id="message"></div></div>
<div id="right"><input id="filter" autocomplete="off" placeholder="type a class number or name, Enter answers">
<div id="help"></div><ul id="classes"></ul></div></main>
<script>
let state = null, shown = [], chosen = 0, busy = false;
const $ = id => document.getElementById(id);
function sharp(img, box) {  // small images grow by whole pixels, large ones shrink to the box
  const scale = Math.min(box / img.naturalWidth, box / img.naturalHeight);
  const grown = scale >= 1 ? Math.floor(scale) : scale;
  img.width = img.naturalWidth * grown; img.height = img.naturalHeight * grown;
  img.style.imageRendering = grown > 1 ? "pixelated" : "auto";
}
function few() { return state.classes.length <= 10; }
function render() {
  const typed = $("filter").value.trim().toLowerCase();
  shown = [];
  state.classes.forEach((name, c) => {
    const hit = !typed || String(c).startsWith(typed) || name.toLowerCase().includes(typed);
    if (hit) shown.push(c);
    $("class" + c).style.display = hit ? "" : "none";
  });
  chosen = Math.min(chosen, Math.max(shown.length - 1, 0));
  document.querySelectorAll("#classes li").forEach(li => li.classList.remove("chosen"));
  if (shown.length && typed) {  // nothing chosen before a key is typed: Enter alone answers nothing
    const li = $("class" + shown[chosen]); li.classList.add("chosen"); li.scrollIntoView({block: "nearest"}); }
}
function listClasses() {
  $("classes").innerHTML = "";
  state.classes.forEach((name, c) => {
    const li = document.createElement("li"); li.id = "class" + c;
    const named = name === String(c) ? "" : name.replace(/</g, "&lt;");  // digits: the number is the name
    li.innerHTML = `<span class="name"><b>${c}</b> ${named}</span>`;
    for (let j = 0; j < state.examples[c]; j++) {
      const img = document.createElement("img"); img.loading = "lazy"; img.src = `/reference/${c}/${j}`;
      img.onload = () => img.style.imageRendering = img.naturalWidth < 64 && img.naturalHeight < 64 ? "pixelated" : "auto";
      li.appendChild(img);
    }
    li.onclick = () => answer(c);
    $("classes").appendChild(li);
  });
  $("help").textContent = few() ? "a digit answers; or type part of a name, arrows choose, Enter answers"
                                : "type a class number or part of a name; arrows choose, Enter answers";
}
function show(next) {
  state = next;
  $("title").textContent = state.title;
  $("filter").value = ""; chosen = 0; render();
  if (state.next === null) {
    const s = state.score, pct = v => (100 * v).toFixed(1) + "%";
    $("progress").textContent = `done: ${state.answered} of ${state.n} answered`;
    $("sample").style.display = "none"; $("filter").disabled = true;
    $("message").textContent = `Done. Your top-1 on these ${s.answered}: ${pct(s.top1)} (95% interval ` +
      `${pct(s.top1_ci95[0])} to ${pct(s.top1_ci95[1])}). Answers in ${state.answers}`;
    return;
  }
  $("progress").textContent = `sample ${state.next + 1} of ${state.n} (${state.answered} answered)`;
  $("sample").src = `/sample/${state.next}`;
  if (state.next + 1 < state.n) new Image().src = `/sample/${state.next + 1}`;
  $("filter").focus();
}
async function answer(c) {
  if (busy || state.next === null) return;
  busy = true;
  const reply = await fetch("/answer", {method: "POST", body: JSON.stringify({sample: state.next, answer: c})});
  const body = await reply.json();
  if (body.error) $("message").textContent = body.error; else $("message").textContent = "";
  busy = false;
  if (body.error) show(await (await fetch("/state")).json()); else show(body);
}
$("filter").addEventListener("keydown", e => {
  if (e.key === "Enter") { e.preventDefault(); if (shown.length && $("filter").value.trim()) answer(shown[chosen]); }
  else if (e.key === "ArrowDown") { e.preventDefault(); chosen = Math.min(chosen + 1, shown.length - 1); render(); }
  else if (e.key === "ArrowUp") { e.preventDefault(); chosen = Math.max(chosen - 1, 0); render(); }
  else if (few() && /^[0-9]$/.test(e.key) && !$("filter").value) { e.preventDefault(); answer(Number(e.key)); }
});
$("filter").addEventListener("input", () => { chosen = 0; render(); });
$("sample").onload = () => sharp($("sample"), Math.min(window.innerWidth - 520, window.innerHeight - 120));
document.addEventListener("keydown", e => { if (document.activeElement !== $("filter")) $("filter").focus(); });
fetch("/state").then(r => r.json()).then(s => { state = s; listClasses(); show(s); });
</script></body></html>
"""

"""A Hugging Face hub on 127.0.0.1 that serves weights files made in the test (tests/test_fetch_weights.py).

`HF_ENDPOINT=http://127.0.0.1:PORT` sends huggingface_hub's downloads here instead of huggingface.co, so
`python -m runner.fetch_weights` runs its real download path (HEAD for the file's metadata, then GET) into
the real cache layout (models--OWNER--NAME/{blobs,refs,snapshots}) without the network.
"""

from __future__ import annotations

import hashlib
import socket
import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"  # the revision every repository answers with


@contextmanager
def serving(files: dict[str, dict[str, Path]]):
    """Serve {"owner/name": {"model.safetensors": PATH}} until the block ends; yields the endpoint URL."""

    class Answer(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet: pytest shows the test's own output
            pass

        def answer(self, with_body: bool) -> None:
            # /OWNER/NAME/resolve/REVISION/FILENAME
            parts = self.path.split("?", 1)[0].strip("/").split("/")
            repo, filename = "/".join(parts[:2]), "/".join(parts[4:])
            path = files.get(repo, {}).get(filename)
            if path is None:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound" if repo in files else "RepoNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = Path(path).read_bytes()
            self.send_response(200)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if with_body:
                self.wfile.write(data)

        def do_HEAD(self):
            self.answer(with_body=False)

        def do_GET(self):
            self.answer(with_body=True)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def closed_endpoint() -> str:
    """A local URL where nothing listens: a connection there is refused at once, as on a node without internet."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"

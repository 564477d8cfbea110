"""The registered champion behind the real `mlflow models serve`, on a free loopback port.

A tiny LeNet-5 (trained for seconds on vertical "A" / horizontal "b" bars) is written as a
serving folder, registered in a temporary SQLite store with alias ``champion``, and served by
the ``mlflow`` command exactly as the README shows (two workers); requests go over HTTP.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
mlflow = pytest.importorskip("mlflow")

from handwriting import labels  # noqa: E402
from handwriting.models.zoo import build  # noqa: E402
from handwriting.serving.predictor import Predictor, write_serving_dir  # noqa: E402
from handwriting.serving.pyfunc import ALIAS, register_champion  # noqa: E402
from tests.unit.test_serving import bar, bars, png_bytes  # noqa: E402

# A real server in its own process: over 5 s each (`pytest -m "not slow"` leaves them out).
pytestmark = pytest.mark.slow

NAME = "handwriting-letters"
START_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def records(*files: bytes, **params) -> bytes:
    body = {"dataframe_records": [{"image": base64.b64encode(f).decode()} for f in files]}
    if params:
        body["params"] = params
    return json.dumps(body).encode()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(base URL, serving folder) of a running `mlflow models serve` of the champion alias."""
    root = tmp_path_factory.mktemp("served")
    keras.utils.set_random_seed(0)
    model = build("lenet5", (32, 32, 1), labels.NUM_CLASSES)
    x, y = bars(384, seed=1)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x[..., None], y, batch_size=32, epochs=6, verbose=0)
    serving = write_serving_dir(root / "serving", model)
    uri = f"sqlite:///{(root / 'mlflow.db').as_posix()}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.chdir(root)
        from handwriting import tracking

        tracking.configure(root=root)
        with mlflow.start_run():
            register_champion(serving, name=NAME, champion="lenet5-tuned", score=0.9, mflops=0.42,
                              example_image=png_bytes(bar(True, np.random.default_rng(0))))
    port = free_port()
    command = [str(Path(sys.executable).parent / "mlflow"), "models", "serve",
               "-m", f"models:/{NAME}@{ALIAS}", "--env-manager", "local",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "2"]
    log = (root / "server.log").open("w")
    # The scoring server runs `uvicorn` from PATH, as in an activated virtual environment.
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    server = subprocess.Popen(command, cwd=root, env=env,
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"mlflow models serve exited with {server.returncode}:\n"
                            f"{(root / 'server.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow models serve did not answer /ping in {START_TIMEOUT_S} s:"
                            f"\n{(root / 'server.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, serving
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        log.close()


def test_the_server_answers_with_labels_and_probabilities(served):
    base, serving = served
    rng = np.random.default_rng(5)
    files = [png_bytes(bar(True, rng)), png_bytes(bar(False, rng))]
    status, text = post(f"{base}/invocations", records(*files))
    assert status == 200, text
    predictions = json.loads(text)["predictions"]
    predictor = Predictor.from_directory(serving)
    assert [p["label"] for p in predictions] == ["A", "b"]
    for answer, data in zip(predictions, files):
        expected = predictor.predict(data, top_k=5)
        assert answer["top_labels"] == [label for label, _ in expected]
        assert answer["probability"] == pytest.approx(expected[0][1], abs=1e-6)
        assert len(answer["top_probabilities"]) == 5
        assert answer["unsure"] is False and answer["message"] == answer["label"]


def test_concurrent_clients_all_get_their_answers(served):
    import threading

    base, _ = served
    rng = np.random.default_rng(8)
    bodies = {label: records(png_bytes(bar(label == "A", rng))) for label in ("A", "b")}
    outcomes: list[tuple[str, int, str]] = []

    def client(label: str) -> None:
        for _ in range(10):
            status, text = post(f"{base}/invocations", bodies[label])
            outcomes.append((label, status, text))

    threads = [threading.Thread(target=client, args=(label,)) for label in "AbAb"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 40
    for label, status, text in outcomes:
        assert status == 200, text
        assert json.loads(text)["predictions"][0]["label"] == label


def test_the_server_runs_on_uvloop_and_httptools():
    # Without them uvicorn's worker processes (`--workers 2`) leave Nagle's algorithm on and
    # every answer waits ~40 ms for a delayed ACK (benchmarks/serve_load.py: 78 requests/s).
    from uvicorn.loops.auto import auto_loop_factory
    from uvicorn.protocols.http.auto import AutoHTTPProtocol

    loop = auto_loop_factory()()
    try:
        assert type(loop).__module__.startswith("uvloop")
    finally:
        loop.close()
    assert AutoHTTPProtocol.__module__.endswith("httptools_impl")


def test_top_k_is_a_request_parameter(served):
    base, _ = served
    status, text = post(f"{base}/invocations",
                        records(png_bytes(bar(True, np.random.default_rng(6))), top_k=2))
    assert status == 200, text
    assert len(json.loads(text)["predictions"][0]["top_labels"]) == 2


@pytest.mark.parametrize("body, content_type, message", [
    (json.dumps({"dataframe_records": [{"image": "%%% not base64"}]}).encode(),
     "application/json", "not valid base64"),
    (records(b"just some text, not an image"), "application/json", "row 0"),
    (records(png_bytes(np.full((40, 40), 255, np.uint8))), "application/json", "ink"),
    (records(png_bytes(bar(True, np.random.default_rng(7))), top_k=99), "application/json",
     "top_k"),
    (json.dumps({"dataframe_records": [{"picture": "aGVsbG8="}]}).encode(),
     "application/json", "image"),
    (b"{not json", "application/json", ""),
    (b"image=abc", "text/plain", ""),
])
def test_bad_requests_get_a_clear_4xx(served, body, content_type, message):
    base, _ = served
    status, text = post(f"{base}/invocations", body, content_type)
    assert 400 <= status < 500, (status, text)
    assert message in text

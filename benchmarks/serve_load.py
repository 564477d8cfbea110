"""Load on the served champion: concurrent clients on loopback for a bounded time.

Run: ``python benchmarks/serve_load.py [--clients 4] [--seconds 15] [--images-per-request 1]
[--workers 1]``

By default it starts ``mlflow models serve -m models:/<export.registered_model>@champion
--env-manager local --workers N`` on a free loopback port (the repository's MLflow store, after
``dvc repro``) and stops it at the end; ``--url http://127.0.0.1:5001`` measures a server you
started yourself instead. Each client sends one request after another, each holding
``--images-per-request`` PNG files (base64, as in the README's curl call) made from the test
split (``data/split/test``), or from the EMNIST sample beside the repository when the split is
absent. Prints requests/s, images/s, p50/p99/max latency and the error count; the server's
first ``--warm-up`` requests are not counted.

Only loopback addresses are accepted, and the run stops after ``--seconds`` whatever happens.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
EMNIST = REPO.parent / "shared" / "data" / "emnist-letters"
START_TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _pngs(count: int) -> list[bytes]:
    """PNG files of real letters: the test split enlarged as dark ink on white, else EMNIST."""
    import cv2

    split = REPO / "data" / "split" / "test" / "images.npy"
    if split.is_file():
        images = np.load(split)[:count]
        images = [cv2.resize(255 - image, (128, 128)) for image in images]
    elif EMNIST.is_dir():
        paths = sorted(EMNIST.rglob("*.png"))
        images = [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
                  for path in paths[:: max(1, len(paths) // count)][:count]]
    else:
        raise SystemExit("no images: run `dvc repro` (data/split/test) or put the EMNIST sample "
                         f"at {EMNIST}")
    return [cv2.imencode(".png", image)[1].tobytes() for image in images]


def _start_server(model_uri: str, port: int, workers: int) -> subprocess.Popen:
    from handwriting import tracking

    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.tracking_uri(REPO),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", model_uri,
               "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers)]
    print(f"starting: {' '.join(command)}", flush=True)
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


def _wait_until_up(host: str, port: int, server: subprocess.Popen | None) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server is not None and server.poll() is not None:
            raise SystemExit("the server exited:\n" + server.stderr.read().decode()[-3000:])
        try:
            connection = http.client.HTTPConnection(host, port, timeout=2)
            connection.request("GET", "/ping")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"no answer on http://{host}:{port}/ping after {START_TIMEOUT_S} s")


def _client(host: str, port: int, bodies: list[bytes], stop_at: float, warm_up: int,
            latencies: list[float], errors: list[str], lock: threading.Lock) -> None:
    connection = http.client.HTTPConnection(host, port, timeout=30)
    index = 0
    while time.monotonic() < stop_at:
        body = bodies[index % len(bodies)]
        started = time.perf_counter()
        try:
            connection.request("POST", "/invocations", body,
                               {"Content-Type": "application/json"})
            response = connection.getresponse()
            text = response.read()
            failed = None if response.status == 200 else f"HTTP {response.status}: {text[:200]}"
        except (OSError, http.client.HTTPException) as error:
            failed = f"{type(error).__name__}: {error}"
            connection.close()
            connection = http.client.HTTPConnection(host, port, timeout=30)
        elapsed = (time.perf_counter() - started) * 1000.0
        index += 1
        if index <= warm_up:
            continue
        with lock:
            if failed:
                errors.append(failed)
            else:
                latencies.append(elapsed)
    connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None,
                        help="a running server on loopback (default: start one)")
    parser.add_argument("--model-uri", default=None,
                        help="what to serve when starting a server (default: "
                             "models:/<export.registered_model>@champion)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="measured duration, at most 300 (default 15)")
    parser.add_argument("--images-per-request", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1,
                        help="server worker processes when starting one (default 1)")
    parser.add_argument("--warm-up", type=int, default=5,
                        help="requests per client not counted (default 5)")
    args = parser.parse_args(argv)
    if not 0 < args.seconds <= 300 or not 1 <= args.clients <= 64 \
            or not 1 <= args.images_per_request <= 256:
        parser.error("--seconds must be in (0, 300], --clients in 1..64, "
                     "--images-per-request in 1..256")

    server = None
    if args.url:
        parsed = urllib.parse.urlparse(args.url)
        host, port = parsed.hostname, parsed.port or 80
        if host not in ("127.0.0.1", "localhost", "::1"):
            parser.error("--url must be a loopback address (127.0.0.1 or localhost)")
    else:
        from handwriting.params import load_params

        name = load_params(REPO / "params.yaml").export.registered_model
        host, port = "127.0.0.1", _free_port()
        server = _start_server(args.model_uri or f"models:/{name}@champion", port,
                               args.workers)
    try:
        _wait_until_up(host, port, server)
        files = _pngs(256)
        per = args.images_per_request
        bodies = [json.dumps({"dataframe_records": [
            {"image": base64.b64encode(files[(start + k) % len(files)]).decode()}
            for k in range(per)]}).encode() for start in range(0, len(files), per)]
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + args.seconds
        started = time.monotonic()
        threads = [threading.Thread(target=_client, args=(host, port, bodies, stop_at,
                                                          args.warm_up, latencies, errors,
                                                          lock))
                   for _ in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
    finally:
        if server is not None and server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)

    done = len(latencies)
    print(f"\n{args.clients} clients, {per} image(s) per request, {elapsed:.1f} s, "
          f"{args.workers if server is not None else 'unknown'} server worker(s) "
          f"(load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} cores)")
    if done:
        p50, p99 = np.percentile(latencies, [50, 99])
        print(f"requests/s: {done / elapsed:9.1f}")
        print(f"images/s:   {done * per / elapsed:9.1f}")
        print(f"latency ms: p50 {p50:.2f}  p99 {p99:.2f}  max {max(latencies):.2f}")
    print(f"errors:     {len(errors)}" + (f" (first: {errors[0]})" if errors else ""))
    return 1 if errors or not done else 0


if __name__ == "__main__":
    sys.exit(main())

"""Take a screenshot of the web app in headless Chromium.

Starts ``handwriting app`` on a free port against the given folders, waits until the server
answers, opens a page in headless Chromium through Playwright (optionally uploading an image
on the Classify page and waiting for the prediction), saves a PNG of the whole page (and its
visible text with ``--text``) and stops the server.

    python scripts/app_screenshot.py --page classify --upload letter.png --out /tmp/app.png

Needs the ``playwright`` package and a Chromium binary (Debian: ``apt-get install chromium``);
Playwright downloads no browser here, it drives the one given by ``--chromium``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

PAGES = {"home": "", "classify": "classify", "models": "models", "about": "about"}
# What each page shows once it has finished drawing (its title).
TITLES = {"home": "Handwritten letter recognition", "classify": "Classify a letter",
          "models": "Models", "about": "About"}
CONTENT_HEIGHT = ("() => Math.max(document.body.scrollHeight, ...[...document.querySelectorAll("
                  "'[data-testid=\"stMain\"]')].map(e => e.scrollHeight))")
MAX_HEIGHT = 8000  # pixels: a very long page is cut rather than a huge picture
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--no-first-run",
                  "--disable-extensions", "--hide-scrollbars"]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_app(args: argparse.Namespace, port: int, log: Path) -> subprocess.Popen:
    """``handwriting app`` in the background, its output going to ``log``."""
    command = [sys.executable, "-m", "handwriting.cli", "app", "--port", str(port),
               "--address", "127.0.0.1", "--models-dir", str(args.models_dir),
               "--feedback-dir", str(args.feedback_dir), "--metrics-dir", str(args.metrics_dir),
               "--plots-dir", str(args.plots_dir), "--params", str(args.params)]
    with log.open("wb") as stream:
        return subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT,
                                start_new_session=True)


def wait_for_server(url: str, process: subprocess.Popen, timeout: float, log: Path) -> None:
    """Poll Streamlit's health endpoint until it says ok."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with status {process.returncode}; its output:\n"
                               f"{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as reply:
                if reply.read().strip() == b"ok":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.3)
    raise TimeoutError(f"the app did not answer at {url} within {timeout:.0f} s; its output:\n"
                       f"{log.read_text(errors='replace')}")


def stop_app(process: subprocess.Popen) -> None:
    """Stop the server we started (and only it: its own session, by its id)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def shoot_with_playwright(args: argparse.Namespace, url: str) -> str:
    """Screenshot through Playwright; returns the page's visible text."""
    from playwright.sync_api import sync_playwright

    timeout_ms = args.timeout * 1000
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(args.chromium),
                                             args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            page.goto(url, timeout=timeout_ms)
            page.get_by_role("heading", name=TITLES[args.page]).first.wait_for(
                timeout=timeout_ms)
            if args.upload:
                page.locator('input[type="file"]').first.set_input_files(str(args.upload))
                page.get_by_text("Predicted letter").first.wait_for(timeout=timeout_ms)
            # Streamlit shows a "Running..." status while the script runs; wait until it is
            # gone so the picture shows the finished page.
            page.wait_for_function(
                "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                timeout=timeout_ms)
            # Streamlit scrolls inside its main block, not the document, so a "full page"
            # screenshot would stop at the window: grow the window to the content until the
            # content stops growing (charts and images arrive after the text).
            height = args.height
            for _ in range(10):
                page.wait_for_timeout(args.settle * 1000)
                content = int(page.evaluate(CONTENT_HEIGHT))
                if content <= height or height >= MAX_HEIGHT:
                    break
                height = min(content, MAX_HEIGHT)
                page.set_viewport_size({"width": args.width, "height": height})
            page.screenshot(path=str(args.out), full_page=True)
            return page.inner_text("body")
        finally:
            browser.close()


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--page", choices=sorted(PAGES), default="home")
    parser.add_argument("--upload", type=Path, default=None,
                        help="an image to upload on the Classify page before the screenshot")
    parser.add_argument("--out", type=Path, default=Path("app_screenshot.png"))
    parser.add_argument("--text", type=Path, default=None,
                        help="also save the page's visible text here (Playwright only)")
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--feedback-dir", type=Path, default=Path("data/feedback"))
    parser.add_argument("--metrics-dir", type=Path, default=Path("metrics"))
    parser.add_argument("--plots-dir", type=Path, default=Path("plots"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--chromium", type=Path,
                        default=Path(shutil.which("chromium") or "/usr/bin/chromium"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--timeout", type=int, default=120, help="seconds for each wait")
    parser.add_argument("--settle", type=int, default=2,
                        help="seconds to let charts finish drawing before the picture")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Start the app, take the screenshot, stop the app."""
    args = build_parser().parse_args(argv)
    if not args.chromium.is_file():
        raise SystemExit(f"{args.chromium}: no Chromium there; install it (Debian: apt-get "
                         "install chromium) or pass --chromium")
    if args.upload and args.page != "classify":
        raise SystemExit("--upload works on the classify page only")
    if importlib.util.find_spec("playwright") is None:
        # Chromium's own --screenshot cannot wait for Streamlit, which draws the page over a
        # websocket after loading: it would only catch the empty skeleton.
        raise SystemExit("this script needs the playwright package: pip install playwright "
                         "(no browser download needed, it drives --chromium)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as scratch:
        log = Path(scratch) / "app.log"
        process = start_app(args, port, log)
        try:
            wait_for_server(url, process, args.timeout, log)
            page_url = f"{url}/{PAGES[args.page]}"
            text = shoot_with_playwright(args, page_url)
        finally:
            stop_app(process)
    if args.text:
        args.text.write_text(text, encoding="utf-8")
    print(f"saved {args.out} ({os.path.getsize(args.out):,} bytes) of {page_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The app in a real browser: ``scripts/app_screenshot.py`` starts ``handwriting app`` on a
free port, uploads a letter on the Classify page in headless Chromium and saves a screenshot.

Skipped when Chromium (Debian: ``apt-get install chromium``) or the ``playwright`` package
is not installed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.app.conftest import letter_png
from tests.conftest import REPO

CHROMIUM = Path("/usr/bin/chromium")
SCRIPT = REPO / "scripts" / "app_screenshot.py"

pytestmark = [pytest.mark.slow,  # a real browser: over 5 s each
              pytest.mark.skipif(not CHROMIUM.is_file(),
                                 reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)")]
pytest.importorskip("playwright", reason="the screenshots need the playwright package")


def test_the_classify_page_in_chromium(tmp_path, models_dir):
    letter = tmp_path / "letter.png"
    letter.write_bytes(letter_png("A"))
    shot, text = tmp_path / "classify.png", tmp_path / "classify.txt"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--page", "classify", "--upload", str(letter),
         "--out", str(shot), "--text", str(text), "--models-dir", str(models_dir),
         "--feedback-dir", str(tmp_path / "feedback"), "--metrics-dir", str(tmp_path / "m"),
         "--plots-dir", str(tmp_path / "p"), "--params", str(tmp_path / "none.yaml"),
         "--chromium", str(CHROMIUM), "--timeout", "90"],
        check=True, timeout=240, cwd=tmp_path)

    picture = cv2.imread(str(shot))
    assert picture is not None and picture.shape[1] == 1280 and picture.shape[0] >= 900
    gray = cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)
    assert gray.std() > 20, "the screenshot is (nearly) one colour: a blank page?"
    # The Grad-CAM overlay is the only strongly coloured thing on the page.
    hsv = cv2.cvtColor(picture, cv2.COLOR_BGR2HSV)
    assert np.count_nonzero(hsv[..., 1] > 150) > 2000
    page = text.read_text()
    assert "Classify a letter" in page and "Predicted letter" in page
    assert "Grad-CAM" in page and "letter.png" in page
    assert not list((tmp_path / "feedback").rglob("*.png"))  # looking saves nothing


def test_the_home_page_in_chromium(tmp_path, models_dir):
    shot, text = tmp_path / "home.png", tmp_path / "home.txt"
    # The ensemble: its kind from params.yaml's evaluate section, its weights from here.
    (tmp_path / "m" / "train").mkdir(parents=True)
    for name in ("lenet5-tuned", "gru-tuned"):
        (tmp_path / "m" / "train" / f"{name}.json").write_text('{"val_accuracy": 0.5}')
    subprocess.run(
        [sys.executable, str(SCRIPT), "--page", "home", "--out", str(shot), "--text", str(text),
         "--models-dir", str(models_dir), "--feedback-dir", str(tmp_path / "feedback"),
         "--metrics-dir", str(tmp_path / "m"), "--plots-dir", str(tmp_path / "p"),
         "--params", str(REPO / "params.yaml"), "--chromium", str(CHROMIUM),
         "--timeout", "90"],
        check=True, timeout=240, cwd=tmp_path)
    gray = cv2.imread(str(shot), cv2.IMREAD_GRAYSCALE)
    assert gray is not None and gray.std() > 20
    # Dark text on the light page: a rendered page has many dark pixels, its skeleton none.
    assert np.count_nonzero(gray < 100) > 5000
    page = text.read_text()
    assert "Handwritten letter recognition" in page and "Corrections saved" in page
    assert "3 models found" in page  # (the table itself is drawn on a canvas)

"""The web app, driven headlessly with Streamlit's AppTest against real (tiny) models.

The models are built here with seeded random weights: a LeNet-5 (convolutions: feature maps
and Grad-CAM) and a small GRU (no convolution: saliency), both "tuned", so the ensemble is
offered too. Every folder the app reads or writes is under tmp_path.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("keras")
pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from handwriting import cli, labels  # noqa: E402
from handwriting.app import MAIN_SCRIPT  # noqa: E402
from handwriting.app.catalog import find_models  # noqa: E402
from handwriting.app.config import (  # noqa: E402
    ENV_FEEDBACK,
    ENV_METRICS,
    ENV_MODELS,
    ENV_PARAMS,
    ENV_PLOTS,
)
from handwriting.app.inference import upload_problem  # noqa: E402
from handwriting.evaluation.ensemble import soft_vote  # noqa: E402
from handwriting.feedback import count_corrections, save_correction  # noqa: E402
from handwriting.params import load_params  # noqa: E402
from handwriting.serving.predictor import Predictor  # noqa: E402
from tests.app.conftest import letter_png  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
TIMEOUT = 120  # the first run imports TensorFlow and loads the models


@pytest.fixture()
def dirs(tmp_path, models_dir, monkeypatch) -> dict[str, Path]:
    """The app's folders in the environment: an empty feedback folder and a copy of the
    project's params.yaml (its evaluate section defines the ensemble)."""
    folders = {"models": models_dir, "feedback": tmp_path / "feedback",
               "metrics": tmp_path / "metrics", "plots": tmp_path / "plots",
               "params": tmp_path / "params.yaml"}
    for name, variable in (("models", ENV_MODELS), ("feedback", ENV_FEEDBACK),
                           ("metrics", ENV_METRICS), ("plots", ENV_PLOTS),
                           ("params", ENV_PARAMS)):
        monkeypatch.setenv(variable, str(folders[name]))
    shutil.copyfile(REPO / "params.yaml", folders["params"])
    # The tuned models' validation accuracies: the ensemble's weights.
    (folders["metrics"] / "train").mkdir(parents=True)
    for name, value in (("lenet5-tuned", 0.9), ("gru-tuned", 0.3)):
        (folders["metrics"] / "train" / f"{name}.json").write_text(json.dumps(
            {"val_accuracy": value}))
    return folders


def start(page: str | None = None) -> AppTest:
    at = AppTest.from_file(str(MAIN_SCRIPT), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.message for e in at.exception]
    if page:
        at.switch_page(page).run()
        assert not at.exception, [e.message for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    """Everything the page says, in one string."""
    parts = [element.value for kind in ("markdown", "caption", "info", "warning", "error",
                                        "success", "title", "header", "subheader")
             for element in getattr(at, kind)]
    return "\n".join(str(part) for part in parts)


def upload(at: AppTest, *files: tuple[str, bytes, str]) -> AppTest:
    at.file_uploader(key="uploads").set_value(list(files)).run()
    assert not at.exception, [e.message for e in at.exception]
    return at


# --------------------------------------------------------------------------------------------
# Home
# --------------------------------------------------------------------------------------------


def test_home_lists_the_models_and_counts_the_corrections(dirs):
    save_correction(letter_png("A"), "A", dirs["feedback"])
    save_correction(letter_png("b"), "b", dirs["feedback"])
    at = start()
    assert at.title[0].value == "Handwritten letter recognition"
    assert [m.value for m in at.metric if m.label == "Corrections saved"] == ["2"]
    shown = at.dataframe[0].value
    assert list(shown["model"]) == ["ensemble", "lenet5-tuned", "gru-tuned"]
    assert "No served model yet" in texts(at)


def test_home_says_why_there_is_no_ensemble(dirs):
    (dirs["metrics"] / "train" / "gru-tuned.json").unlink()
    at = start()
    assert list(at.dataframe[0].value["model"]) == ["lenet5-tuned", "gru-tuned"]
    assert "No ensemble: " in texts(at) and "gru-tuned.json" in texts(at)


def test_home_without_params_says_why_there_is_no_ensemble(dirs):
    dirs["params"].unlink()
    at = start()
    assert list(at.dataframe[0].value["model"]) == ["lenet5-tuned", "gru-tuned"]
    assert "No ensemble: " in texts(at) and f"{dirs['params']} not found" in texts(at)


def test_home_without_models_says_how_to_get_them(dirs, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_MODELS, str(tmp_path / "no-models"))
    at = start()
    assert "No trained models were found" in texts(at) and "dvc repro" in texts(at)
    assert [m.value for m in at.metric if m.label == "Corrections saved"] == ["0"]


# --------------------------------------------------------------------------------------------
# Classify
# --------------------------------------------------------------------------------------------


def test_classify_shows_what_the_predictor_says(dirs):
    data = letter_png("A")
    expected = Predictor(dirs["models"] / "lenet5" / "tuned.keras").predict(data)
    at = start("views/classify.py")
    assert at.multiselect(key="models").value == ["lenet5-tuned"]
    upload(at, ("letter-A.png", data, "image/png"))

    letters = [m.value for m in at.metric if m.label == "Predicted letter"]
    assert letters == [expected[0][0]]
    assert f"confidence {expected[0][1]:.1%}" in texts(at)
    table = at.dataframe[0].value
    assert list(table["model"]) == ["lenet5-tuned"]
    assert list(table["predicted"]) == [expected[0][0]]
    assert table["top5"][0].split()[0] == f"{expected[0][0]}:{expected[0][1]:.3f}"
    # The model input, the Grad-CAM overlay and the feature maps of conv1 and conv2.
    captions = [caption for image in at.get("image") for caption in image.captions]
    assert captions == ["as uploaded", "model input (preprocessed)", "Grad-CAM",
                        "conv1: 6 of 6 maps, 28x28", "conv2: 16 of 16 maps, 10x10"]
    assert [e.label for e in at.expander] == ["Feature maps of the first convolutions"]


def test_classify_ensemble_is_the_weighted_soft_vote(dirs):
    weights = {"lenet5-tuned": 0.9, "gru-tuned": 0.3}  # written by the dirs fixture
    data = letter_png("g", seed=5)
    members = {name: Predictor(dirs["models"] / name.split("-")[0] / "tuned.keras")
               for name in weights}
    vote = soft_vote([members[n].probabilities(members[n].preprocess(data)[None])[0]
                      for n in ("gru-tuned", "lenet5-tuned")], [0.3, 0.9])
    expected = labels.char_of(int(np.argmax(vote)))

    at = start("views/classify.py")
    at.multiselect(key="models").set_value(["ensemble", "gru-tuned"]).run()
    upload(at, ("g.png", data, "image/png"))
    table = at.dataframe[0].value
    assert list(table["model"]) == ["ensemble", "gru-tuned"]
    assert table["predicted"][0] == expected
    assert table["predicted"][1] == members["gru-tuned"].predict(data)[0][0]
    said = texts(at)
    assert "The ensemble averages the tuned models" in said
    assert "no convolution layers" in said  # the GRU has no feature maps


@pytest.mark.parametrize("name, data, mime, message", [
    ("broken.png", b"\x89PNG\r\n\x1a\n not really", "image/png", "cannot be decoded"),
    ("empty.png", b"", "image/png", "the file is empty"),
    ("blank.png", cv2.imencode(".png", np.full((64, 64), 255, np.uint8))[1].tobytes(),
     "image/png", "no ink found"),
])
def test_bad_uploads_get_a_clear_message_and_no_crash(dirs, name, data, mime, message):
    at = upload(start("views/classify.py"), (name, data, mime))
    errors = " ".join(e.value for e in at.error)
    assert name in errors and message in errors
    assert not [m for m in at.metric if m.label == "Predicted letter"]


def test_the_uploader_declares_the_accepted_types_and_size_limit(dirs):
    uploader = start("views/classify.py").file_uploader(key="uploads")
    # Streamlit itself refuses other extensions (in the browser and on the server).
    assert uploader.allowed_type == [".png", ".jpg", ".jpeg"]
    assert uploader.proto.max_upload_size_mb == 5
    assert uploader.accept_multiple_files


@pytest.mark.parametrize("name, size, message", [
    ("letter.gif", 10, "gif file type is not accepted; upload a PNG, JPG, JPEG image"),
    ("letter", 10, "no file type is not accepted"),
    ("big.PNG", 5 * 2**20 + 1, "5.0 MB is over the 5 MB limit"),
    ("empty.jpeg", 0, "the file is empty"),
])
def test_upload_problems_are_explained(name, size, message):
    problem = upload_problem(name, size, max_mb=5, types=("png", "jpg", "jpeg"))
    assert problem.startswith(f"{name}: ") and message in problem
    assert upload_problem("ok.JPG", 5 * 2**20, max_mb=5, types=("png", "jpg", "jpeg")) is None


def test_an_upload_over_the_size_limit_is_refused(dirs, monkeypatch):
    from handwriting.app import config

    monkeypatch.setattr(config, "MAX_UPLOAD_MB", 1)
    noise = np.random.default_rng(0).integers(0, 256, (1100, 1100), dtype=np.uint8)
    data = cv2.imencode(".png", noise)[1].tobytes()  # random pixels do not compress
    assert len(data) > 2**20
    at = upload(start("views/classify.py"), ("noise.png", data, "image/png"))
    assert "noise.png" in " ".join(e.value for e in at.error)
    assert "over the 1 MB limit" in " ".join(e.value for e in at.error)


def test_a_good_and_a_bad_upload_together(dirs):
    at = upload(start("views/classify.py"), ("A.png", letter_png("A"), "image/png"),
                ("bad.jpg", b"nope", "image/jpeg"))
    assert len([m for m in at.metric if m.label == "Predicted letter"]) == 1
    assert "bad.jpg" in " ".join(e.value for e in at.error)


def test_a_correction_saved_through_the_ui_writes_one_file(dirs):
    data = letter_png("B")
    key = hashlib.sha256(data).hexdigest()[:12]
    at = upload(start("views/classify.py"), ("B.png", data, "image/png"))
    assert at.button(key=f"save-{key}").disabled  # nothing chosen yet
    at.selectbox(key=f"fix-{key}").set_value("B").run()
    at.button(key=f"save-{key}").click().run()
    assert not at.exception
    files = sorted(p for p in dirs["feedback"].rglob("*") if p.is_file())
    assert len(files) == 1 and files[0].parent == (dirs["feedback"] / "upper" / "B").resolve()
    success = " ".join(s.value for s in at.success)
    assert str(files[0]) in success and "1 corrections" in success
    assert count_corrections(dirs["feedback"])["B"] == 1


def test_classify_without_models_says_how_to_get_them(dirs, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_MODELS, str(tmp_path / "no-models"))
    at = start("views/classify.py")
    assert "No trained models were found" in texts(at)
    assert not at.file_uploader


def test_the_champion_is_offered_first_and_served_with_onnx(dirs, champion_models_dir,
                                                           monkeypatch):
    monkeypatch.setenv(ENV_MODELS, str(champion_models_dir))
    dirs["metrics"].mkdir(exist_ok=True)
    (dirs["metrics"] / "serving.json").write_text(json.dumps({
        "champion": "lenet5-tuned", "val_f1_macro": 0.8123,
        "onnx": {"test_accuracy": 0.84, "top1_agreement": 1.0, "size_mb": 0.3}}))
    home = start()
    said = texts(home)
    assert "**lenet5-tuned** (chosen by validation macro F1 0.812)" in said
    assert list(home.dataframe[0].value["model"]) == ["champion", "ensemble", "lenet5-tuned",
                                                      "gru-tuned"]
    assert list(home.dataframe[1].value["export"]) == ["onnx"]
    assert "benchmarks/inference.py" in texts(home)  # where speed is measured, not stored

    data = letter_png("h", seed=8)
    served = Predictor.from_directory(champion_models_dir / "serving")
    assert served.backend_name == "onnx"
    at = start("views/classify.py")
    assert at.multiselect(key="models").value == ["champion"]
    upload(at, ("h.png", data, "image/png"))
    assert [m.value for m in at.metric if m.label == "Predicted letter"] == \
        [served.predict(data)[0][0]]
    # Its model.keras gives the explanations.
    assert "Grad-CAM" in [c for image in at.get("image") for c in image.captions]


def test_the_champion_says_when_it_is_not_sure(dirs, champion_models_dir, tmp_path,
                                               monkeypatch):
    import shutil

    # The same champion with a threshold no answer reaches: every answer is "not sure".
    strict = tmp_path / "strict-models"
    shutil.copytree(champion_models_dir, strict)
    config = json.loads((strict / "serving" / "serving.json").read_text())
    config["unsure_threshold"] = 1.0
    (strict / "serving" / "serving.json").write_text(json.dumps(config))
    monkeypatch.setenv(ENV_MODELS, str(strict))
    data = letter_png("h", seed=8)
    best = Predictor.from_directory(strict / "serving").predict(data)[0]
    at = start("views/classify.py")
    upload(at, ("h.png", data, "image/png"))
    assert [m.value for m in at.metric if m.label == "Predicted letter"] == ["?"]
    assert f"Not sure this is a single letter: best guess {best[0]} at {best[1]:.1%}." \
        in texts(at)
    assert list(at.dataframe[0].value["unsure"]) == [True]


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

FIGURES = {"accuracy": 0.84, "case_insensitive_accuracy": 0.91, "f1_macro": 0.835,
           "top5_accuracy": 0.99, "mflops": 0.42, "params": 65364, "size_mb": 0.8,
           "pretrained": 0}


def write_results(metrics: Path, plots: Path) -> None:
    metrics.mkdir(parents=True, exist_ok=True)
    (metrics / "evaluate.json").write_text(json.dumps({
        "lenet5": {"untuned": FIGURES, "tuned": {**FIGURES, "accuracy": 0.86}},
        "ensemble": {**FIGURES, "accuracy": 0.9, "members": 1}}))
    (metrics / "comparison.md").write_text(
        "# Model comparison on the held-out test split\n\nThe champion, served by `export`: "
        "**ensemble**.\n")
    (plots / "history").mkdir(parents=True)
    (plots / "history" / "lenet5-tuned.csv").write_text(
        "epoch,accuracy,loss,val_accuracy,val_loss\n1,0.3,2.5,0.5,1.6\n2,0.6,1.2,0.7,0.9\n")
    (plots / "evaluate" / "confusion").mkdir(parents=True)
    rows = ["actual,predicted", *(f"{c},{c}" for c in labels.CLASSES), "a,A"]
    (plots / "evaluate" / "confusion" / "lenet5-tuned.csv").write_text("\n".join(rows) + "\n")


def test_models_page_renders_the_evaluation(dirs):
    write_results(dirs["metrics"], dirs["plots"])
    at = start("views/models.py")
    assert [t.label for t in at.tabs] == ["Comparison", "lenet5", "ensemble"]
    said = texts(at)
    assert "Model comparison on the held-out test split" in said
    assert "Conv 6@5x5" in said  # the architecture's description
    # Files that are missing are named, with the fix.
    assert "lenet5-untuned.csv` is missing" in said and "dvc repro" in said
    every = at.dataframe[0].value
    assert list(every.columns) == ["figure", "lenet5-untuned", "lenet5-tuned", "ensemble"]
    accuracy = every[every["figure"] == "accuracy"].iloc[0]
    assert (accuracy["lenet5-tuned"], accuracy["ensemble"]) == (0.86, 0.9)


def test_models_page_without_results_says_run_dvc_repro(dirs):
    at = start("views/models.py")
    assert "No evaluation results yet" in texts(at) and "dvc repro" in texts(at)


def test_models_page_names_a_broken_results_file(dirs):
    dirs["metrics"].mkdir(exist_ok=True)
    (dirs["metrics"] / "evaluate.json").write_text("{not json")
    at = start("views/models.py")
    message = " ".join(e.value for e in at.error)
    assert "evaluate.json" in message and "dvc repro" in message


def test_about_page(dirs):
    at = start("views/about.py")
    assert at.title[0].value == "About" and "MIT" in texts(at)


def test_the_catalog_offers_what_the_folders_hold(dirs):
    evaluate = load_params(dirs["params"]).evaluate
    names = [choice.name for choice in find_models(dirs["models"], dirs["metrics"], evaluate)]
    assert names == ["ensemble", "lenet5-tuned", "gru-tuned"]
    names = [choice.name for choice in find_models(dirs["models"], dirs["metrics"], None)]
    assert names == ["lenet5-tuned", "gru-tuned"]  # no evaluate section: no ensemble


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def test_the_app_command_runs_streamlit_on_the_main_script_with_the_folders(tmp_path):
    args = cli.build_parser().parse_args([
        "app", "--port", "8600", "--models-dir", str(tmp_path / "m"), "--feedback-dir",
        "fb", "--metrics-dir", "met", "--plots-dir", "pl", "--params", "p.yaml"])
    command, env = cli.app_command(args)
    assert command[1:5] == ["-m", "streamlit", "run", str(MAIN_SCRIPT)]
    options = dict(zip(command[5::2], command[6::2]))
    assert options["--server.port"] == "8600" and options["--server.headless"] == "true"
    assert options["--server.address"] == "localhost"
    assert env[ENV_MODELS] == str(tmp_path / "m")
    assert env[ENV_FEEDBACK] == str(Path("fb").resolve())
    assert env[ENV_PARAMS] == str(Path("p.yaml").resolve())


@pytest.mark.parametrize("port", ["0", "70000", "http"])
def test_the_app_command_refuses_a_bad_port(port, capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["app", "--port", port])
    assert "--port" in capsys.readouterr().err

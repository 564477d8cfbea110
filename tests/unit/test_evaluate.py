"""Evaluate stage on tiny models: every output in its format, the report and
metrics/champion.json name the champion with its "not sure" threshold, and the cross-dataset
reader treats both polarities alike."""

from __future__ import annotations

import csv
import json
import shutil

import cv2
import numpy as np
import pytest
import yaml

from handwriting import labels
from handwriting.datasets import load_arrays, save_arrays
from handwriting.evaluation.crossdata import read_class_folder
from handwriting.imaging import PreprocessSettings
from handwriting.params import load_params
from handwriting.stages import evaluate
from tests.conftest import repo_params


def small_copy(emnist_dir, target, per_class=1, invert=False):
    for char in labels.CLASSES:
        folder = target / labels.folder_of(char)
        folder.mkdir(parents=True)
        for path in sorted((emnist_dir / labels.folder_of(char)).glob("*.png"))[:per_class]:
            image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            cv2.imwrite(str(folder / path.name), 255 - image if invert else image)
    return target


def test_cross_dataset_reader_gives_the_same_inputs_for_both_polarities(emnist_dir, tmp_path):
    settings = PreprocessSettings(image_size=32)
    white_on_black, ids, skipped = read_class_folder(small_copy(emnist_dir, tmp_path / "a"),
                                                     settings)
    black_on_white, ids2, _ = read_class_folder(
        small_copy(emnist_dir, tmp_path / "b", invert=True), settings)
    assert white_on_black.shape == (52, 32, 32) and skipped == []
    assert sorted(ids.tolist()) == list(range(52)) and ids2.tolist() == ids.tolist()
    np.testing.assert_array_equal(white_on_black, black_on_white)


def test_cross_dataset_reader_reports_bad_files(tmp_path):
    (tmp_path / "upper" / "A").mkdir(parents=True)
    (tmp_path / "upper" / "A" / "bad.png").write_bytes(b"")
    images, ids, skipped = read_class_folder(tmp_path, PreprocessSettings())
    assert len(images) == 0 and [f for f, _ in skipped] == ["upper/A/bad.png"]


@pytest.fixture()
def tiny_project(tmp_path, emnist_dir, monkeypatch):
    import keras

    from handwriting.models.zoo import build

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}")
    monkeypatch.chdir(tmp_path)
    values = repo_params()
    values["train"]["architectures"] = ["lenet5", "gru"]
    values["evaluate"].update(latency_calls=10, explain_samples=4,
                              crossdata=[str(small_copy(emnist_dir, tmp_path / "emnist"))])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values))
    rng = np.random.default_rng(0)
    for subset in ("val", "test"):
        save_arrays(tmp_path / "split" / subset, labels=np.arange(52),
                    images=rng.integers(0, 256, size=(52, 32, 32), dtype=np.uint8))
    keras.utils.set_random_seed(0)
    for arch, hparams in (("lenet5", {}), ("gru", {"units": 8})):
        for variant in ("untuned", "tuned"):
            path = tmp_path / "models" / arch / f"{variant}.keras"
            path.parent.mkdir(parents=True, exist_ok=True)
            build(arch, (32, 32, 1), 52, **hparams).save(path)
            (tmp_path / "metrics" / "train").mkdir(parents=True, exist_ok=True)
            (tmp_path / "metrics" / "train" / f"{arch}-{variant}.json").write_text(
                json.dumps({"val_accuracy": 0.625 if variant == "tuned" else 0.5}))
    return tmp_path


def val_answers(root, arch, variant):
    """Model ``<arch>-<variant>``'s answers on the validation images, by Keras itself."""
    import keras

    model = keras.models.load_model(root / "models" / arch / f"{variant}.keras")
    images = load_arrays(root / "split" / "val", "images")["images"]
    return model.predict(images[..., None].astype(np.float32) / 255.0, verbose=0).argmax(axis=1)


@pytest.mark.slow
def test_evaluate_writes_every_output(tiny_project):
    root = tiny_project
    # The validation labels become lenet5-tuned's answers on half the images: its tuning gain
    # there is large (the gru gain is what the random models give).
    val_labels = np.arange(52)
    val_labels[:26] = val_answers(root, "lenet5", "tuned")[:26]
    save_arrays(root / "split" / "val", labels=val_labels)
    results = evaluate.run(load_params(root / "params.yaml"), root / "split", root / "models",
                           root / "metrics" / "train", root / "out" / "evaluate.json",
                           root / "out" / "crossdata.json", root / "out" / "comparison.md",
                           root / "out" / "per_class", root / "out" / "confused.csv",
                           root / "plots", root / "out" / "champion.json")
    written = json.loads((root / "out" / "evaluate.json").read_text())
    assert written == results
    assert set(written) == {"lenet5", "gru", "ensemble"}
    for figures in (written["lenet5"]["untuned"], written["gru"]["tuned"], written["ensemble"]):
        assert all(isinstance(v, (int, float)) for v in figures.values())  # numbers only
        assert figures["accuracy_ci95_low"] <= figures["accuracy"] <= figures["accuracy_ci95_high"]
        for key in ("accuracy", "case_insensitive_accuracy", "merged37_accuracy", "f1_macro",
                    "f1_macro_ci95_low", "f1_macro_ci95_high", "roc_auc_ovr_macro",
                    "log_loss", "top5_accuracy", "ece", "mflops", "params", "size_mb"):
            assert key in figures
    assert written["lenet5"]["tuned"]["mflops"] == pytest.approx(0.42, abs=0.01)
    # Timings differ on every run: they are in the MLflow run, not in a DVC output.
    assert "latency" not in (root / "out" / "evaluate.json").read_text()
    assert "latency" not in (root / "out" / "comparison.md").read_text()
    import mlflow

    # A child run per model, its figures under the same names (the UI compares them).
    parent = mlflow.search_runs(search_all_experiments=True, output_format="list",
                                filter_string="tags.mlflow.runName = 'evaluate'")[0]
    children = {run.info.run_name: run for run in mlflow.search_runs(
        search_all_experiments=True, output_format="list",
        filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'")}
    assert set(children) == {"lenet5-untuned", "lenet5-tuned", "gru-untuned", "gru-tuned",
                             "ensemble"}
    assert {run.data.tags["variant"] for run in children.values()} == \
        {"untuned", "tuned", "ensemble"}
    tuned = children["lenet5-tuned"].data
    assert tuned.tags["architecture"] == "lenet5" and tuned.metrics["latency_ms"] > 0
    assert tuned.tags["pretrained"] == "false"  # the model's own flag (no ImageNet weights)
    assert tuned.metrics["accuracy"] == pytest.approx(written["lenet5"]["tuned"]["accuracy"])
    assert tuned.metrics["tuning_gain.val_accuracy"] == \
        pytest.approx(written["lenet5"]["tuning_gain"]["val_accuracy"])
    assert tuned.metrics["emnist.accuracy"] == pytest.approx(
        json.loads((root / "out" / "crossdata.json").read_text())["emnist"]["lenet5-tuned"]
        ["accuracy"])
    assert "tuning_gain.val_accuracy" not in children["lenet5-untuned"].data.metrics
    assert children["ensemble"].data.metrics["latency_ms"] > 0
    with (root / "plots" / "confusion" / "gru-tuned.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 52 and set(rows[0]) == {"actual", "predicted"}
    assert {r["actual"] for r in rows} == set(labels.CLASSES)
    assert len((root / "out" / "per_class" / "ensemble.csv").read_text().splitlines()) == 53
    report = (root / "out" / "comparison.md").read_text()
    decision = json.loads((root / "out" / "champion.json").read_text())
    assert set(decision["candidates"]) == {"lenet5-tuned", "gru-tuned", "ensemble"}
    assert decision["champion"] in decision["candidates"]
    assert f"The champion, served by `export`: **{decision['champion']}**" in report
    assert "| ensemble" in report and report.count("**champion**") == 2  # test and crossdata
    unsure = decision["unsure"]
    assert 0.0 <= unsure["threshold"] <= 1.0 and unsure["keep_correct"] == 0.95
    assert set(unsure) == {"threshold", "keep_correct", "val", "test", "emnist"}
    assert set(unsure["emnist"]) == {"unsure_share", "accuracy_answered", "accuracy_all"}
    assert "not sure this is a single letter" in report
    assert "95 % bootstrap interval" in report and "accuracy (95 % CI)" in report
    assert "Cross-dataset: emnist" in report
    crossdata = json.loads((root / "out" / "crossdata.json").read_text())
    assert crossdata["datasets"] == 1 and crossdata["emnist"]["images"] == 52
    assert set(crossdata["emnist"]["ensemble"]) == {"accuracy", "case_insensitive_accuracy",
                                                    "merged37_accuracy", "f1_macro",
                                                    "top5_accuracy"}
    assert "merged-37 accuracy" in report
    # The tuning gain: tuned minus untuned, per architecture, from the model files'
    # predictions (not the training summaries' 0.625 - 0.5), with a paired interval on each
    # set, in evaluate.json, the report and the chart's CSV.
    sets = ("val", "test", "emnist")
    for arch in ("lenet5", "gru"):
        gain, untuned, tuned = (written[arch][k] for k in ("tuning_gain", "untuned", "tuned"))
        assert list(gain) == sorted(  # evaluate.json's keys are sorted
            [f"{s}_accuracy{end}" for s in sets for end in ("", "_ci95_low", "_ci95_high")]
            + ["test_f1_macro"])
        val_accuracy = {variant: np.mean(val_answers(root, arch, variant) == val_labels)
                        for variant in ("untuned", "tuned")}
        assert gain["val_accuracy"] == pytest.approx(
            val_accuracy["tuned"] - val_accuracy["untuned"], abs=1e-6)
        assert gain["test_accuracy"] == pytest.approx(tuned["accuracy"] - untuned["accuracy"],
                                                      abs=1e-6)
        assert gain["test_f1_macro"] == pytest.approx(tuned["f1_macro"] - untuned["f1_macro"],
                                                      abs=1e-6)
        assert gain["emnist_accuracy"] == pytest.approx(
            crossdata["emnist"][f"{arch}-tuned"]["accuracy"]
            - crossdata["emnist"][f"{arch}-untuned"]["accuracy"], abs=1e-6)
        for s in sets:
            low, high = gain[f"{s}_accuracy_ci95_low"], gain[f"{s}_accuracy_ci95_high"]
            assert low <= gain[f"{s}_accuracy"] <= high, (arch, s)
    assert "## Tuning gain (tuned minus untuned)" in report
    assert ("| architecture | validation gain (95 % CI) | test gain (95 % CI) | emnist gain "
            "(95 % CI) | test macro-F1 gain |") in report
    lenet5 = written["lenet5"]["tuning_gain"]
    assert lenet5["val_accuracy"] > 0.3 and lenet5["val_accuracy_ci95_low"] > 0.1
    cell = (f"{lenet5['val_accuracy']:+.3f} ({lenet5['val_accuracy_ci95_low']:+.3f} to "
            f"{lenet5['val_accuracy_ci95_high']:+.3f})")
    assert f"| lenet5 | **{cell}** |" in report  # bold: the whole interval above 0
    mean = (lenet5["val_accuracy"] + written["gru"]["tuning_gain"]["val_accuracy"]) / 2
    assert f"| mean of the seed's 2 | {mean:+.3f} |" in report
    gains = [written[a]["tuning_gain"] for a in ("lenet5", "gru")]
    beyond = sum(g["val_accuracy_ci95_low"] > 0 for g in gains)
    at_least = sum(g["emnist_accuracy"] >= 0 for g in gains)
    assert (f"Tuned beats untuned beyond the interval on validation for {beyond} of 2 "
            f"architectures; on emnist (52-class accuracy) tuned ≥ untuned for {at_least} of "
            "2.") in report
    assert "paired bootstrap" in report
    with (root / "plots" / "tuning_gain.csv").open() as handle:
        bars = list(csv.DictReader(handle))
    assert len(bars) == 8 and set(bars[0]) == {"bar", "architecture", "measure", "gain"}
    assert [b["measure"] for b in bars[:4]] == ["val_accuracy", "test_accuracy",
                                               "emnist_accuracy", "test_f1_macro"]
    assert bars[0]["bar"] == "lenet5: val accuracy"
    assert float(bars[0]["gain"]) == lenet5["val_accuracy"]
    for name in ("explain/lenet5-tuned.png", "explain/gru-untuned.png",
                 "mistakes/ensemble.png", "roc/ensemble.csv", "comparison.csv",
                 "crossdata/emnist.csv"):
        assert (root / "plots" / name).stat().st_size > 0, name


@pytest.mark.slow
def test_evaluate_runs_and_says_so_without_external_datasets(tiny_project, capsys):
    root = tiny_project
    values = yaml.safe_load((root / "params.yaml").read_text())
    values["evaluate"]["crossdata"] = []
    (root / "params.yaml").write_text(yaml.safe_dump(values))
    shutil.rmtree(root / "emnist")
    evaluate.run(load_params(root / "params.yaml"), root / "split", root / "models",
                 root / "metrics" / "train", root / "e.json", root / "c.json", root / "r.md",
                 root / "pc", root / "cp.csv", root / "plots", root / "ch.json")
    assert json.loads((root / "c.json").read_text()) == {"datasets": 0}
    assert "cross-dataset evaluation skipped" in capsys.readouterr().out


def test_a_missing_model_is_a_clear_error(tiny_project):
    root = tiny_project
    (root / "models" / "gru" / "tuned.keras").unlink()
    with pytest.raises(FileNotFoundError, match="gru/tuned.keras is missing; run `dvc repro`"):
        evaluate.run(load_params(root / "params.yaml"), root / "split", root / "models",
                     root / "metrics" / "train", root / "e.json", root / "c.json",
                     root / "r.md", root / "pc", root / "cp.csv", root / "plots",
                     root / "ch.json")
    # The stage's command line says it in one line.
    with pytest.raises(SystemExit, match=r"^evaluate: .*gru/tuned.keras is missing"):
        evaluate.main(["--params", str(root / "params.yaml"), "--split", str(root / "split"),
                       "--models", str(root / "models"), "--train-metrics",
                       str(root / "metrics" / "train"), "--metrics", str(root / "e.json"),
                       "--crossdata", str(root / "c.json"), "--report", str(root / "r.md"),
                       "--per-class", str(root / "pc"), "--confused", str(root / "cp.csv"),
                       "--plots", str(root / "plots"), "--champion", str(root / "ch.json")])


def test_the_evaluate_settings_are_typed_and_name_a_bad_key(tmp_path):
    from handwriting.params import Evaluate, ParamsError, build_section

    project = repo_params()["evaluate"]
    assert build_section(Evaluate, project, "evaluate").crossdata == project["crossdata"]
    section = {**project, "ensemble": "hard", "ensemble_weighting": "none",
               "crossdata": ["a", "b"]}
    settings = build_section(Evaluate, section, "evaluate")
    assert (settings.ensemble, settings.ensemble_weighting) == ("hard", "none")
    assert settings.crossdata == ["a", "b"]
    assert build_section(Evaluate, {**section, "crossdata": None}, "evaluate").crossdata == []
    for change, message in (
            ({"ensemble": "sofft"}, "evaluate.ensemble must be one of soft, hard, got 'sofft'"),
            ({"ensemble_weighting": "f1"}, "evaluate.ensemble_weighting must be one of "
                                           "val_accuracy, none, got 'f1'"),
            ({"latency_calls": 0}, "evaluate.latency_calls must be a whole number, 1 or more"),
            ({"explain_samples": "12"}, "'evaluate.explain_samples' must be an integer"),
            ({"crossdata": "emnist"}, "'evaluate.crossdata' must be a list of strings"),
            ({"crossdata": [""]}, "evaluate.crossdata must be a list of folder paths"),
            ({"ensembel": "soft"}, r"unknown key\(s\) evaluate.ensembel; known keys here: "
                                   "ensemble,")):
        with pytest.raises(ParamsError, match=message):
            build_section(Evaluate, {**section, **change}, "evaluate")
    without = {k: v for k, v in section.items() if k != "latency_calls"}
    with pytest.raises(ParamsError, match=r"missing key 'evaluate.latency_calls'"):
        build_section(Evaluate, without, "evaluate")
    # The stage says it in one line, before loading anything.
    values = repo_params()
    values["evaluate"]["ensemble"] = "sofft"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values))
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match="^evaluate: params.yaml: evaluate.ensemble must be"):
        evaluate.main(["--params", str(tmp_path / "params.yaml"), "--split", str(tmp_path),
                       "--models", str(tmp_path), "--train-metrics", str(tmp_path),
                       "--metrics", str(out / "e.json"), "--crossdata", str(out / "c.json"),
                       "--report", str(out / "r.md"), "--per-class", str(out / "pc"),
                       "--confused", str(out / "cp.csv"), "--plots", str(out / "plots"),
                       "--champion", str(out / "ch.json")])


@pytest.mark.slow
def test_vgg_models_share_their_base_features_and_keep_their_probabilities():
    """Scores.predict runs a frozen VGG-16 base once per image set for every model that has
    that base, and gives each model the probabilities the whole model gives, bit for bit; a
    model with another base gets its own features."""
    import keras

    from handwriting.evaluation.comparison import Scores, predict_all
    from handwriting.models.zoo import build, find_vgg_base

    keras.utils.set_random_seed(5)
    vgg16 = build("vgg16", (32, 32, 1), labels.NUM_CLASSES, weights=None)
    vgg16_gru = build("vgg16_gru", (32, 32, 1), labels.NUM_CLASSES, weights=None, units=8)
    find_vgg_base(vgg16_gru).set_weights(find_vgg_base(vgg16).get_weights())
    other = build("vgg16", (32, 32, 1), labels.NUM_CLASSES, weights=None)  # its own base
    images = np.random.default_rng(0).integers(0, 256, (300, 32, 32), dtype=np.uint8)
    scores = Scores()
    for key, model in (("vgg16-tuned", vgg16), ("vgg16_gru-tuned", vgg16_gru),
                       ("vgg16-untuned", other)):
        scores.add(key, model)
        shared = scores.predict(key, images)
        assert np.array_equal(shared, predict_all(scores.predictors[key], images)), key
    assert len(scores.features) == 2  # one set of features per base, not per model
    assert not np.array_equal(scores.predict("vgg16-tuned", images),
                              scores.predict("vgg16-untuned", images))


def _letters(root, *names):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.full((8, 8), 200 if "A" in name else 50, np.uint8))
    return root


def test_a_cross_dataset_fingerprint_follows_every_change_to_the_folder(tmp_path):
    from handwriting.evaluation.crossdata import fingerprint

    assert fingerprint(tmp_path / "absent") == {"present": False}
    root = _letters(tmp_path / "set", "upper/A/1.png", "lower/b/1.png")
    first = fingerprint(root)
    assert first["present"] and first["files"] == 2 and fingerprint(root) == first
    seen = [first["md5"]]
    cv2.imwrite(str(root / "upper/A/1.png"), np.zeros((8, 8), np.uint8))  # an image changed
    seen.append(fingerprint(root)["md5"])
    (root / "upper/A/1.png").rename(root / "upper/A/2.png")  # a file renamed
    seen.append(fingerprint(root)["md5"])
    _letters(root, "lower/c/1.png")  # a file added
    after = fingerprint(root)
    seen.append(after["md5"])
    assert after["files"] == 3 and len(set(seen)) == 4


def test_the_crossdata_stage_writes_each_folder_as_params_names_it(tmp_path, monkeypatch,
                                                                   capsys):
    from handwriting.stages import crossdata

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    _letters(tmp_path / "real", "upper/A/1.png")
    values = repo_params()
    values["evaluate"]["crossdata"] = ["real", str(tmp_path / "gone")]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values))
    assert crossdata.main(["--params", "params.yaml", "--out", "out/crossdata.json"]) == 0
    written = json.loads((tmp_path / "out" / "crossdata.json").read_text())
    assert list(written) == sorted(["real", str(tmp_path / "gone")])
    assert written["real"]["files"] == 1 and written[str(tmp_path / "gone")] == {"present": False}
    assert "absent (evaluate skips it)" in capsys.readouterr().out
    values["evaluate"]["crossdata"] = "real"  # not a list: a clear error, nothing written
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(values))
    with pytest.raises(SystemExit, match="'evaluate.crossdata' must be a list"):
        crossdata.main(["--params", "params.yaml", "--out", "out/other.json"])
    assert not (tmp_path / "out" / "other.json").exists()

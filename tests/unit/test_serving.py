"""Serving: ONNX export and int8 quantisation against Keras, the Predictor on both back ends,
the serving folder, and the ``handwriting predict`` command.

The models are tiny and built here: an untrained GRU, and a LeNet-5 trained for a few seconds
to tell vertical bars ("A") from horizontal bars ("b"), so that its outputs are far from uniform.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
ort = pytest.importorskip("onnxruntime")
cv2 = pytest.importorskip("cv2")

from handwriting import cli, labels  # noqa: E402
from handwriting.imaging import ImageError, PreprocessSettings, preprocess  # noqa: E402
from handwriting.models.zoo import build  # noqa: E402
from handwriting.serving.onnx_export import (  # noqa: E402
    agreement,
    export_onnx,
    quantize_int8,
)
from handwriting.serving.onnx_graph import INPUT_NAME, OUTPUT_NAME  # noqa: E402
from handwriting.serving.predictor import Predictor, write_serving_dir  # noqa: E402

SIZE = 32
VERTICAL, HORIZONTAL = labels.index_of("A"), labels.index_of("b")


def bar(vertical: bool, rng: np.random.Generator, canvas: int = 64) -> np.ndarray:
    """A dark bar on a white uint8 canvas, with random position, length and thickness."""
    image = np.full((canvas, canvas), 255, np.uint8)
    along = sorted(rng.integers(6, canvas - 6, size=2))
    if along[1] - along[0] < 25:
        along = [8, canvas - 8]
    across = int(rng.integers(15, canvas - 15))
    thickness = int(rng.integers(3, 7))
    if vertical:
        cv2.line(image, (across, int(along[0])), (across, int(along[1])), 0, thickness)
    else:
        cv2.line(image, (int(along[0]), across), (int(along[1]), across), 0, thickness)
    return image


def png_bytes(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    assert ok
    return encoded.tobytes()


def bars(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Preprocessed bar images (count, S, S) and their class indices."""
    rng = np.random.default_rng(seed)
    vertical = rng.random(count) < 0.5
    images = np.stack([preprocess(bar(v, rng), SIZE) for v in vertical])
    return images, np.where(vertical, VERTICAL, HORIZONTAL)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[keras.Model, Path]:
    """A LeNet-5 trained briefly on vertical ("A") against horizontal ("b") bars, and its file."""
    keras.utils.set_random_seed(0)
    model = build("lenet5", (SIZE, SIZE, 1), labels.NUM_CLASSES)
    x, y = bars(384, seed=1)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x[..., None], y, batch_size=32, epochs=6, verbose=0)
    path = tmp_path_factory.mktemp("trained") / "lenet5.keras"
    model.save(path)
    return model, path


@pytest.fixture(scope="module")
def trained_onnx(trained, tmp_path_factory) -> Path:
    return export_onnx(trained[1], tmp_path_factory.mktemp("onnx") / "lenet5.onnx")


@pytest.fixture(scope="module")
def letter_files(tmp_path_factory) -> dict[str, Path]:
    """Three bar images in the upper/A, lower/b layout plus a corrupt PNG, and a blank one."""
    root = tmp_path_factory.mktemp("letters")
    rng = np.random.default_rng(7)
    files = {}
    for name, folder, vertical in (("a1", "upper/A", True), ("a2", "upper/A", True),
                                   ("b1", "lower/b", False)):
        (root / folder).mkdir(parents=True, exist_ok=True)
        files[name] = root / folder / f"{name}.png"
        files[name].write_bytes(png_bytes(bar(vertical, rng)))
    files["broken"] = root / "lower" / "b" / "broken.png"
    files["broken"].write_bytes(b"\x89PNG\r\n\x1a\n this is not really a PNG")
    blank_dir = tmp_path_factory.mktemp("blank")
    files["blank"] = blank_dir / "blank.png"
    files["blank"].write_bytes(png_bytes(np.full((40, 40), 255, np.uint8)))
    files["root"] = root
    return files


# --- export and quantisation ------------------------------------------------------------------


def test_the_trained_fixture_is_not_uniform(trained):
    """The quantisation test below means something only if the model has learnt."""
    x, y = bars(64, seed=2)
    probabilities = keras.ops.convert_to_numpy(trained[0](x[..., None], training=False))
    assert np.mean(probabilities.argmax(1) == y) >= 0.95
    assert probabilities.max(1).mean() > 0.5


@pytest.mark.parametrize("arch", ["lenet5", "gru"])
def test_onnx_export_agrees_with_keras(arch, tmp_path):
    keras.utils.set_random_seed(1)
    hparams = {"units": 16} if arch == "gru" else {}
    model = build(arch, (SIZE, SIZE, 1), labels.NUM_CLASSES, **hparams)
    path = export_onnx(model, tmp_path / f"{arch}.onnx")
    assert path == tmp_path / f"{arch}.onnx" and path.is_file()

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (model_input,), (model_output,) = session.get_inputs(), session.get_outputs()
    assert model_input.name == INPUT_NAME and model_output.name == OUTPUT_NAME
    assert model_input.shape[1:] == [SIZE, SIZE, 1] and isinstance(model_input.shape[0], str)
    assert model_input.type == "tensor(float)"

    images = np.random.default_rng(3).random((70, SIZE, SIZE), dtype=np.float32)
    result = agreement(model, path, images, batch_size=32)  # three batches, the last short
    assert result["images"] == 70
    assert result["top1_agreement"] == 1.0
    assert result["max_abs_diff"] < 1e-4
    # The comparison must see the actual outputs: a different model does not agree.
    other = build(arch, (SIZE, SIZE, 1), labels.NUM_CLASSES, **hparams)
    assert agreement(other, path, images)["max_abs_diff"] > 1e-4


@pytest.mark.slow
def test_onnx_exports_of_one_model_are_byte_identical(tmp_path, monkeypatch):
    """tf2onnx numbers the names it makes with a counter that runs on through a process, and
    orders nodes, constants and a GRU loop's outputs by those names (``Max__100`` sorts before
    ``Max__99``): exports of the same file must be the same bytes wherever the counter
    stands, here as after other exports."""
    tf2onnx_utils = pytest.importorskip("tf2onnx.utils")
    keras.utils.set_random_seed(2)
    model = build("lenet5_gru", (SIZE, SIZE, 1), labels.NUM_CLASSES, units=8)
    model.save(tmp_path / "lenet5_gru.keras")
    first = export_onnx(tmp_path / "lenet5_gru.keras", tmp_path / "first.onnx").read_bytes()
    monkeypatch.setattr(tf2onnx_utils, "INTERNAL_NAME", 9_990)
    second = export_onnx(tmp_path / "lenet5_gru.keras", tmp_path / "second.onnx").read_bytes()
    assert first == second
    assert b"__inference" not in second and b"unk__" not in second
    images = np.random.default_rng(4).random((8, SIZE, SIZE), dtype=np.float32)
    assert agreement(model, tmp_path / "second.onnx", images)["max_abs_diff"] < 1e-4


def _scrambled(proto, rng: np.random.Generator):
    """A copy of an ONNX model that computes the same with other value and node names, its
    constants in reverse, its nodes in another valid order (random among the ready ones)."""
    import onnx

    from handwriting.serving.onnx_graph import all_graphs, free_names, subgraphs

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    names: dict[str, str] = {INPUT_NAME: INPUT_NAME, OUTPUT_NAME: OUTPUT_NAME, "": ""}

    def new(name: str) -> str:
        return names.setdefault(name, f"v{rng.integers(10**9)}_{len(names)}")

    for graph in all_graphs(copy.graph):
        for value in list(graph.input) + list(graph.output) + list(graph.initializer) \
                + list(graph.value_info):
            value.name = new(value.name)
        for node in graph.node:
            node.input[:] = [new(name) for name in node.input]
            node.output[:] = [new(name) for name in node.output]
            node.name = f"n{rng.integers(10**9)}"
        constants = list(graph.initializer)[::-1]
        del graph.initializer[:]
        graph.initializer.extend(constants)
    for graph in all_graphs(copy.graph):
        known = {value.name for value in list(graph.input) + list(graph.initializer)}
        outer = free_names(graph)  # a loop body's values from around it
        pending, order = list(graph.node), []
        while pending:
            ready = [n for n in pending if (set(n.input) | set().union(
                *map(free_names, subgraphs(n)))) - {""} <= known | outer]
            chosen = ready[int(rng.integers(len(ready)))]
            pending.remove(chosen)
            order.append(chosen)
            known.update(chosen.output)
        nodes = [type(n)() for n in order]
        for target, node in zip(nodes, order):
            target.CopyFrom(node)
        del graph.node[:]
        graph.node.extend(nodes)
    return copy


def test_canonical_names_depend_only_on_what_the_graph_computes(tmp_path):
    """The names and the order tf2onnx gives a graph vary between exports; after the
    canonical renaming a scrambled copy (other names, other constant and node order) is
    the same bytes as the export itself."""
    import onnx

    from handwriting.serving.onnx_graph import canonical_names

    keras.utils.set_random_seed(3)
    model = build("lenet5_gru", (SIZE, SIZE, 1), labels.NUM_CLASSES, units=8)
    exported = onnx.load(str(export_onnx(model, tmp_path / "model.onnx")))
    for seed in range(3):
        scrambled = _scrambled(exported, np.random.default_rng(seed))
        assert scrambled.SerializeToString() != exported.SerializeToString()
        canonical_names(scrambled)
        assert scrambled.SerializeToString() == exported.SerializeToString()


class _BrokenOptimizer(Exception):
    pass


def test_a_failing_tf2onnx_optimizer_fails_the_export_and_the_switch_is_restored(
        tmp_path, monkeypatch):
    """tf2onnx would skip a failing graph optimizer with a warning, after deep-copying the
    graph before every optimizer to allow it; the export switches that off (the same bytes,
    a third less time): a failure is raised, and the caller's setting comes back after."""
    from collections import OrderedDict

    tf2onnx_optimizer = pytest.importorskip("tf2onnx.optimizer")

    class Broken:
        graph_been_opt = False

        def optimize(self, graph, iteration):
            raise _BrokenOptimizer("this optimizer fails")

    model = build("lenet5", (SIZE, SIZE, 1), labels.NUM_CLASSES)
    monkeypatch.delenv("TF2ONNX_CATCH_ERRORS", raising=False)  # tf2onnx's default: catch
    with monkeypatch.context() as patch:
        patch.setattr(tf2onnx_optimizer, "_optimizers", OrderedDict(broken=Broken))
        with pytest.raises(_BrokenOptimizer, match="this optimizer fails"):
            export_onnx(model, tmp_path / "model.onnx")
    assert "TF2ONNX_CATCH_ERRORS" not in os.environ
    assert not (tmp_path / "model.onnx").exists()
    monkeypatch.setenv("TF2ONNX_CATCH_ERRORS", "TRUE")
    export_onnx(model, tmp_path / "model.onnx")
    assert os.environ["TF2ONNX_CATCH_ERRORS"] == "TRUE"


def test_export_refuses_a_missing_keras_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.keras.*dvc repro"):
        export_onnx(tmp_path / "nothing.keras", tmp_path / "out.onnx")


def test_int8_copy_agrees_and_is_smaller(trained, trained_onnx, tmp_path):
    int8 = quantize_int8(trained_onnx, tmp_path / "lenet5.int8.onnx")
    assert int8.is_file()
    assert int8.stat().st_size < 0.6 * trained_onnx.stat().st_size
    x, _ = bars(100, seed=4)
    noise = np.random.default_rng(5).random((100, SIZE, SIZE), dtype=np.float32)
    result = agreement(trained[0], int8, np.concatenate([x, noise]))
    assert result["top1_agreement"] >= 0.9
    assert 0.0 < result["max_abs_diff"] < 0.5  # quantised: close, but not bit-identical


def test_int8_with_calibration_images(trained, trained_onnx, tmp_path):
    x, _ = bars(64, seed=6)
    int8 = quantize_int8(trained_onnx, tmp_path / "calibrated.onnx", x)
    assert agreement(trained[0], int8, x)["top1_agreement"] >= 0.9
    static = quantize_int8(trained_onnx, tmp_path / "static.onnx", x, method="static")
    assert agreement(trained[0], static, x)["top1_agreement"] >= 0.9
    with pytest.raises(ValueError, match="calibration_images"):
        quantize_int8(trained_onnx, tmp_path / "x.onnx", method="static")


# --- the Predictor ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_predictor(trained_onnx) -> Predictor:
    return Predictor(trained_onnx)


@pytest.fixture(scope="module")
def keras_predictor(trained) -> Predictor:
    return Predictor(trained[1])


def test_onnx_and_keras_predictors_agree(onnx_predictor, keras_predictor, letter_files):
    assert (onnx_predictor.backend_name, keras_predictor.backend_name) == ("onnx", "keras")
    for name, expected in (("a1", "A"), ("b1", "b")):
        from_onnx = onnx_predictor.predict(letter_files[name])
        from_keras = keras_predictor.predict(letter_files[name])
        assert from_onnx[0][0] == from_keras[0][0] == expected
        assert from_onnx[0][1] == pytest.approx(from_keras[0][1], abs=1e-4)


def test_predict_takes_a_path_bytes_or_an_array(onnx_predictor, letter_files):
    path = letter_files["a1"]
    from_path = onnx_predictor.predict(path)
    from_str = onnx_predictor.predict(str(path))
    from_bytes = onnx_predictor.predict(path.read_bytes())
    from_array = onnx_predictor.predict(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
    assert from_path == from_str == from_bytes
    assert [label for label, _ in from_array] == [label for label, _ in from_path]
    np.testing.assert_allclose([p for _, p in from_array], [p for _, p in from_path],
                               atol=1e-6)


@pytest.mark.parametrize("top_k", [1, 3, 52])
def test_top_k_sorted_and_at_most_one(onnx_predictor, letter_files, top_k):
    top = onnx_predictor.predict(letter_files["b1"], top_k=top_k)
    assert len(top) == top_k
    assert len({label for label, _ in top}) == top_k
    assert all(label in labels.CLASSES for label, _ in top)
    probabilities = [p for _, p in top]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(isinstance(p, float) and 0.0 <= p <= 1.0 for p in probabilities)
    assert sum(probabilities) <= 1.0 + 1e-5
    if top_k == 52:
        assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)


def test_top_k_must_be_positive(onnx_predictor, letter_files):
    with pytest.raises(ValueError, match="top_k"):
        onnx_predictor.predict(letter_files["a1"], top_k=0)


def test_predict_batch_equals_predict(onnx_predictor, keras_predictor, letter_files):
    sources = [letter_files["a1"], letter_files["b1"].read_bytes(), letter_files["a2"]]
    for predictor in (onnx_predictor, keras_predictor):
        batched = predictor.predict_batch(sources, top_k=4)
        single = [predictor.predict(source, top_k=4) for source in sources]
        assert [[label for label, _ in top] for top in batched] == \
            [[label for label, _ in top] for top in single]
        np.testing.assert_allclose([[p for _, p in top] for top in batched],
                                   [[p for _, p in top] for top in single], atol=1e-5)
    assert onnx_predictor.predict_batch([]) == []


def test_probabilities_of_preprocessed_images(onnx_predictor, keras_predictor):
    x, y = bars(5, seed=8)
    probabilities = onnx_predictor.probabilities(x)
    assert probabilities.shape == (5, labels.NUM_CLASSES) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(probabilities.argmax(1), y)
    np.testing.assert_allclose(onnx_predictor.probabilities(x[..., None]), probabilities)
    np.testing.assert_allclose(keras_predictor.probabilities(x), probabilities, atol=1e-4)
    assert onnx_predictor.probabilities(x[:0]).shape == (0, labels.NUM_CLASSES)
    with pytest.raises(ValueError, match="32x32"):
        onnx_predictor.probabilities(np.zeros((2, 28, 28), np.float32))


def test_blank_image_raises_image_error_naming_the_file(onnx_predictor, letter_files):
    with pytest.raises(ImageError, match="blank.png.*no ink"):
        onnx_predictor.predict(letter_files["blank"])
    with pytest.raises(ImageError, match="upload-17.png"):
        onnx_predictor.predict(letter_files["blank"].read_bytes(), name="upload-17.png")
    with pytest.raises(ImageError, match="blank.png"):
        onnx_predictor.predict_batch([letter_files["a1"], letter_files["blank"]])


def test_missing_model_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"absent\.onnx.*dvc repro"):
        Predictor(tmp_path / "absent.onnx")


def test_settings_must_fit_the_model(trained_onnx):
    with pytest.raises(ValueError, match="image_size=64"):
        Predictor(trained_onnx, PreprocessSettings(image_size=64))


# --- the serving folder ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def serving_dir(trained, tmp_path_factory) -> Path:
    settings = PreprocessSettings(image_size=SIZE, margin=0.1, max_pixels=1_000_000)
    return write_serving_dir(tmp_path_factory.mktemp("serve") / "serving", trained[1], settings)


def test_serving_dir_round_trip(serving_dir, keras_predictor, letter_files):
    names = {p.name for p in serving_dir.iterdir()}
    assert {"model.onnx", "model.int8.onnx", "model.keras", "serving.json"} <= names
    config = json.loads((serving_dir / "serving.json").read_text())
    assert config == {"image_size": SIZE, "margin": 0.1, "max_pixels": 1_000_000,
                      "labels": list(labels.CLASSES), "unsure_threshold": 0.0}

    predictor = Predictor.from_directory(serving_dir)
    assert predictor.backend_name == "onnx"
    assert predictor.model_path == serving_dir / "model.onnx"
    assert predictor.settings == PreprocessSettings(SIZE, 0.1, 1_000_000)
    image = letter_files["b1"]
    expected = Predictor(keras_predictor.model_path, predictor.settings).predict(image)
    assert predictor.predict(image)[0][0] == expected[0][0] == "b"
    assert predictor.predict(image)[0][1] == pytest.approx(expected[0][1], abs=1e-4)
    for variant in ("int8", "keras"):
        other = Predictor.from_directory(serving_dir, variant=variant)
        assert other.model_path.name == {"int8": "model.int8.onnx",
                                         "keras": "model.keras"}[variant]
        assert other.predict(image)[0][0] == "b"


def test_serving_dir_from_an_in_memory_model(trained, tmp_path):
    folder = write_serving_dir(tmp_path / "serving", trained[0], None)
    assert (folder / "model.keras").is_file()
    assert json.loads((folder / "serving.json").read_text())["image_size"] == SIZE


def test_serving_dir_falls_back_to_keras(serving_dir, tmp_path, letter_files):
    folder = tmp_path / "keras-only"
    folder.mkdir()
    for name in ("model.keras", "serving.json"):
        (folder / name).write_bytes((serving_dir / name).read_bytes())
    predictor = Predictor.from_directory(folder)
    assert predictor.backend_name == "keras"
    assert predictor.predict(letter_files["a1"])[0][0] == "A"


def test_serving_dir_missing_folder_or_model(serving_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no-such-folder.*dvc repro"):
        Predictor.from_directory(tmp_path / "no-such-folder")
    folder = tmp_path / "config-only"
    folder.mkdir()
    (folder / "serving.json").write_bytes((serving_dir / "serving.json").read_bytes())
    with pytest.raises(FileNotFoundError, match=r"model\.onnx.*dvc repro"):
        Predictor.from_directory(folder)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"serving\.json.*dvc repro"):
        Predictor.from_directory(empty)


# --- the command line ------------------------------------------------------------------------


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    status = cli.main(["predict", *map(str, argv)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_json_reports_every_file_and_the_corrupt_one(trained, letter_files, capsys):
    status, out, err = run_cli(capsys, letter_files["root"], "--model", trained[1], "--json")
    assert status == 1
    entries = json.loads(out)
    assert len(entries) == 4
    by_name = {Path(entry["file"]).name: entry for entry in entries}
    assert set(by_name) == {"a1.png", "a2.png", "b1.png", "broken.png"}
    assert "broken.png" in by_name["broken.png"]["error"]
    assert by_name["broken.png"]["top"] == []
    for name, expected in (("a1.png", "A"), ("a2.png", "A"), ("b1.png", "b")):
        entry = by_name[name]
        assert entry["error"] is None
        assert len(entry["top"]) == 5
        assert entry["top"][0]["label"] == expected
        assert 0.5 < entry["top"][0]["probability"] <= 1.0
    assert "broken.png" in err
    assert "accuracy against the folder labels: 1.0000 (3/3)" in err


def test_cli_plain_output_one_line_per_image(trained_onnx, letter_files, capsys):
    status, out, err = run_cli(capsys, letter_files["root"], "--model", trained_onnx,
                               "--top-k", "3")
    assert status == 1
    lines = out.splitlines()
    assert len(lines) == 3  # the corrupt file goes to stderr
    for line in lines:
        path, *top = line.split("\t")
        assert Path(path).name in {"a1.png", "a2.png", "b1.png"}
        assert len(top) == 3
        label, probability = top[0].split(" ")
        assert label in labels.CLASSES and 0.0 <= float(probability) <= 1.0
    assert "broken.png" in err and "model:" in err


def test_cli_all_good_files_exit_zero(serving_dir, letter_files, capsys):
    status, out, err = run_cli(capsys, letter_files["a1"], letter_files["b1"],
                               "--model", serving_dir, "--top-k", "1")
    assert status == 0
    assert [line.split("\t")[1].split(" ")[0] for line in out.splitlines()] == ["A", "b"]
    assert "serving.json" in err
    assert "merged-37: 1.0000 (2/2)" in err  # both files sit in class folders


def test_cli_unlabelled_files_and_a_symlink_loop(serving_dir, letter_files, tmp_path, capsys):
    # A file outside the class folders has no label to score; a symlink loop is one clear
    # error line, not a traceback, and the other files go on.
    loose = tmp_path / "loose.png"
    loose.write_bytes(letter_files["a1"].read_bytes())
    loop = tmp_path / "loop.png"
    loop.symlink_to(loop)
    status, out, err = run_cli(capsys, loose, loop, "--model", serving_dir, "--top-k", "1")
    assert status == 1
    assert out.splitlines()[0].startswith(f"{loose}\tA ")
    assert f"error: {loop}: cannot be read" in err and "symbolic links" in err
    assert "Traceback" not in err and "accuracy against the folder labels" not in err


def _with_threshold(serving_dir: Path, folder: Path, threshold) -> Path:
    shutil.copytree(serving_dir, folder)
    config = json.loads((folder / "serving.json").read_text())
    config["unsure_threshold"] = threshold
    (folder / "serving.json").write_text(json.dumps(config))
    return folder


def test_answers_below_the_served_threshold_are_not_sure(serving_dir, letter_files, tmp_path,
                                                         capsys):
    # A threshold of 1.0 makes every answer "not sure": the line says so, the JSON says so,
    # and stderr counts them; the letters and probabilities are still given.
    strict = _with_threshold(serving_dir, tmp_path / "strict", 1.0)
    predictor = Predictor.from_directory(strict)
    assert predictor.unsure_threshold == 1.0
    assert predictor.is_unsure(predictor.predict(letter_files["a1"]))
    assert not Predictor.from_directory(serving_dir).is_unsure(
        Predictor.from_directory(serving_dir).predict(letter_files["a1"]))
    status, out, err = run_cli(capsys, letter_files["a1"], "--model", strict, "--top-k", "1")
    assert status == 0
    assert out.splitlines()[0].split("\t")[1].startswith("A ")
    assert out.splitlines()[0].endswith("\t(not sure this is a single letter)")
    assert "1 of 1 answers are below the model's confidence threshold (1.000)" in err
    status, out, _ = run_cli(capsys, letter_files["a1"], "--model", strict, "--json")
    assert json.loads(out)[0]["unsure"] is True


def test_a_bad_threshold_in_the_serving_folder_is_named(serving_dir, tmp_path):
    for threshold, name in ((1.5, "high"), ("high", "text")):
        folder = _with_threshold(serving_dir, tmp_path / name, threshold)
        with pytest.raises(ValueError, match="unsure_threshold|serving.json"):
            Predictor.from_directory(folder)


def test_cli_model_names_and_the_default(trained, serving_dir, letter_files, tmp_path, capsys):
    models = tmp_path / "models"
    (models / "lenet5").mkdir(parents=True)
    (models / "lenet5" / "tuned.keras").write_bytes(trained[1].read_bytes())
    status, _, err = run_cli(capsys, letter_files["a1"], "--model", "lenet5-tuned",
                             "--models-dir", models)
    assert status == 0 and str(models / "lenet5" / "tuned.keras") in err
    status, _, err = run_cli(capsys, letter_files["a1"], "--models-dir", models)
    assert status == 0 and str(models / "lenet5" / "tuned.keras") in err
    (models / "serving").mkdir()
    for item in serving_dir.iterdir():
        (models / "serving" / item.name).write_bytes(item.read_bytes())
    status, _, err = run_cli(capsys, letter_files["a1"], "--models-dir", models)
    assert status == 0 and str(models / "serving" / "model.onnx") in err
    status, _, err = run_cli(capsys, letter_files["a1"], "--model", "lenet5-untuned",
                             "--models-dir", models)
    assert status == 2 and "dvc repro" in err


def test_cli_without_a_model_exits_2(letter_files, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no models/ here
    status, out, err = run_cli(capsys, letter_files["root"])
    assert status == 2
    assert out == ""
    assert "no model found" in err and "dvc repro" in err and "--model" in err


def test_cli_other_subcommands_still_work(capsys):
    assert cli.main(["classes"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == labels.NUM_CLASSES
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predict", "x.png", "--top-k", "0"])
    assert exit_info.value.code == 2


def test_export_inlines_constants_the_model_captures(tmp_path):
    # A Normalization layer with a fixed mean (as in the VGG models) is traced as a captured
    # constant, which tf2onnx would leave as a second graph input.
    inputs = keras.Input((SIZE, SIZE, 1))
    x = keras.layers.Normalization(mean=[0.5], variance=[0.25])(inputs)
    outputs = keras.layers.Dense(labels.NUM_CLASSES, activation="softmax")(
        keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    path = export_onnx(model, tmp_path / "normalized.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [value.name for value in session.get_inputs()] == [INPUT_NAME]
    images, _ = bars(8, seed=3)
    assert agreement(model, path, images)["max_abs_diff"] < 1e-5


def test_agreement_with_refuses_probabilities_for_other_images(trained, trained_onnx):
    from handwriting.serving.onnx_export import agreement_with

    images, _ = bars(10, seed=5)
    expected = keras.ops.convert_to_numpy(trained[0](images[..., None], training=False))
    assert agreement_with(expected, trained_onnx, images)["top1_agreement"] == 1.0
    with pytest.raises(ValueError, match="9 expected probabilities for 10 images"):
        agreement_with(expected[:9], trained_onnx, images)

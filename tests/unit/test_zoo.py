"""The model zoo: shapes for all image sizes, training, options, saving, VGG weights, freezing."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from handwriting.models import zoo  # noqa: E402
from handwriting.models.zoo import (  # noqa: E402
    ARCHITECTURES,
    VGG16_NOTOP_WEIGHTS_FILE,
    build,
    build_with_info,
    default_hparams,
    is_pretrained,
    unfreeze_top_vgg_blocks,
    vgg16_base,
)

NUM_CLASSES = 52
RNN_ARCHS = ("lstm", "gru", "lenet5_gru", "vgg16_gru")


def make(arch: str, size: int = 32, **hparams) -> keras.Model:
    """Build with random VGG weights unless the test says otherwise (no download here)."""
    if arch.startswith("vgg16"):
        hparams.setdefault("weights", None)
    return build(arch, (size, size, 1), NUM_CLASSES, **hparams)


def images(size: int, count: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, size, size, 1), dtype=np.float32)


def predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x, training=False))


def vgg_layer(model: keras.Model) -> keras.Model:
    (base,) = [layer for layer in model.layers if layer.name.startswith("vgg16_base_")]
    return base


def trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


# --- shapes --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [32, 64, 128])
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_every_architecture_builds_for_every_size(arch, size):
    model = make(arch, size)
    assert model.name == arch
    assert tuple(model.input_shape) == (None, size, size, 1)
    assert tuple(model.output_shape) == (None, NUM_CLASSES)
    last = model.layers[-1]
    assert isinstance(last, keras.layers.Dense) and last.units == NUM_CLASSES
    assert last.get_config()["activation"] == "softmax"
    probabilities = predict(model, images(size, count=3))
    assert probabilities.shape == (3, NUM_CLASSES)
    assert np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("arch", "layer", "steps", "features"),
    [
        ("lstm", "rows_as_steps", 64, 64),          # image rows as time steps
        ("gru", "rows_as_steps", 64, 64),
        ("lenet5_gru", "rows_as_steps", 8, 8 * 32),  # 64 / 2**3 rows of w*c features
        ("vgg16_gru", "positions_as_steps", 4, 512),  # 64 / 2**5 = 2x2 positions
    ],
)
def test_sequences_follow_the_feature_map(arch, layer, steps, features):
    model = make(arch, 64)
    assert tuple(model.get_layer(layer).output.shape) == (None, steps, features)


def test_recurrent_layer_types():
    def kinds(model):
        return {type(layer).__name__ for layer in model.layers}

    assert {"LSTM"} <= kinds(make("lstm")) and "GRU" not in kinds(make("lstm"))
    assert {"GRU"} <= kinds(make("gru")) and "LSTM" not in kinds(make("gru"))
    assert sum(isinstance(layer, keras.layers.GRU) for layer in make("lenet5_gru").layers) == 2


def test_lenet5_matches_the_seed_at_32():
    model = make("lenet5", 32)
    assert model.get_layer("flatten").output.shape[-1] == 5 * 5 * 16
    assert [model.get_layer(n).units for n in ("fc1", "fc2")] == [120, 84]
    assert model.get_layer("dropout1").rate == pytest.approx(0.3)
    assert make("lenet5", dropout=0.1).get_layer("dropout2").rate == pytest.approx(0.1)


# --- training ------------------------------------------------------------------------------


def test_rescnn_is_residual_and_pools_globally():
    model = make("rescnn", 64, width=8)
    adds = [layer for layer in model.layers if isinstance(layer, keras.layers.Add)]
    assert len(adds) == 3
    assert isinstance(model.get_layer("global_pool"), keras.layers.GlobalAveragePooling2D)
    # Three stages of 8, 16 and 32 filters; the map halves three times (stem and two blocks).
    assert model.get_layer("block3_out").output.shape[1:] == (8, 8, 32)


@pytest.mark.parametrize("arch", ["lenet5", "gru",
                                  pytest.param("rescnn", marks=pytest.mark.slow)])
def test_one_training_step(arch):
    model = make(arch, 32)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    before = [w.copy() for w in model.get_weights()]
    x = images(32, count=8)
    y = np.arange(8) % NUM_CLASSES
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    loss = history.history["loss"][0]
    assert np.isfinite(loss) and loss > 0
    changed = [not np.array_equal(a, b) for a, b in zip(before, model.get_weights())]
    assert sum(changed) > len(changed) // 2


# --- options -------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", RNN_ARCHS)
def test_bidirectional_and_attention_change_the_model(arch):
    plain = make(arch).count_params()
    bidirectional = make(arch, bidirectional=True)
    attention = make(arch, attention=True)
    both = make(arch, bidirectional=True, attention=True)
    assert bidirectional.count_params() > plain
    assert attention.count_params() > plain
    assert both.count_params() > bidirectional.count_params()
    assert sum(isinstance(layer, keras.layers.Bidirectional)
               for layer in bidirectional.layers) == 2
    assert any(isinstance(layer, keras.layers.Softmax) for layer in attention.layers)
    for model in (bidirectional, attention, both):
        assert tuple(model.output_shape) == (None, NUM_CLASSES)
        np.testing.assert_allclose(predict(model, images(32, 2)).sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(
    ("arch", "hparams"),
    [("gru", {"attention": True}), ("lenet5_gru", {"attention": True, "bidirectional": True}),
     ("rescnn", {"width": 8})],
)
def test_model_with_options_saves_and_loads(tmp_path, arch, hparams):
    model = make(arch, 32, **hparams)
    x = images(32, count=5, seed=1)
    expected = predict(model, x)
    path = tmp_path / f"{arch}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.name == arch
    np.testing.assert_allclose(predict(loaded, x), expected, rtol=1e-5, atol=1e-6)


def test_attention_weights_depend_on_the_input():
    """The pooling really weighs time steps: its weights sum to 1 and are not uniform."""
    model = make("gru", 32, attention=True)
    probe = keras.Model(model.input, model.get_layer("attention_weights").output)
    weights = np.asarray(probe(images(32, 2), training=False))[..., 0]
    assert weights.shape == (2, 32)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    assert weights.std(axis=1).min() > 0


# --- VGG-16: preprocessing, freezing, fine-tuning ------------------------------------------


def test_vgg_preprocessing_matches_keras():
    model = make("vgg16", 32)
    probe = keras.Model(model.input, model.get_layer("imagenet_mean").output)
    x = images(32, count=2)
    expected = keras.applications.vgg16.preprocess_input(np.repeat(x, 3, axis=-1) * 255.0)
    np.testing.assert_allclose(np.asarray(probe(x)), expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("arch", ["vgg16", "vgg16_gru"])
def test_vgg_base_is_frozen_then_top_blocks_unfreeze(arch):
    model = make(arch, 32)
    base = vgg_layer(model)
    assert base.trainable_weights == [] and len(base.non_trainable_weights) == 26  # 13 convs
    head = trainable_count(model)
    if arch == "vgg16":  # Dense 512->256 and 256->52
        assert head == 512 * 256 + 256 + 256 * NUM_CLASSES + NUM_CLASSES
    assert trainable_count(model) < 0.05 * model.count_params()

    names = unfreeze_top_vgg_blocks(model, 3)
    assert names == [f"block{b}_conv{c}" for b in (3, 4, 5) for c in (1, 2, 3)]
    for layer in base.layers:
        if isinstance(layer, keras.layers.Conv2D):
            block = int(re.match(r"block(\d)", layer.name).group(1))
            assert layer.trainable == (block >= 3), layer.name
    convs_unfrozen = 3 * 3 * 2  # 9 conv layers, kernel + bias
    assert len(base.trainable_weights) == convs_unfrozen
    assert trainable_count(model) > head + 7_000_000

    unfreeze_top_vgg_blocks(model, 0)
    assert base.trainable_weights == [] and trainable_count(model) == head


def test_fine_tuning_updates_only_the_unfrozen_blocks():
    model = make("vgg16", 32)
    unfreeze_top_vgg_blocks(model, 3)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    base = vgg_layer(model)
    before = {n: base.get_layer(n).get_weights()[0].copy()
              for n in ("block1_conv1", "block2_conv2", "block3_conv1", "block5_conv3")}
    model.fit(images(32, 4), np.arange(4), batch_size=4, epochs=1, verbose=0)
    after = {n: base.get_layer(n).get_weights()[0] for n in before}
    assert np.array_equal(before["block1_conv1"], after["block1_conv1"])
    assert np.array_equal(before["block2_conv2"], after["block2_conv2"])
    assert not np.array_equal(before["block3_conv1"], after["block3_conv1"])
    assert not np.array_equal(before["block5_conv3"], after["block5_conv3"])


def test_unfreeze_refuses_bad_input():
    with pytest.raises(ValueError, match="no VGG-16 base"):
        unfreeze_top_vgg_blocks(make("lenet5"), 3)
    with pytest.raises(ValueError, match="0 to 5"):
        unfreeze_top_vgg_blocks(make("vgg16"), 6)


# --- VGG-16 weights ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_base() -> keras.Model:
    base, pretrained = vgg16_base((32, 32, 1), None)
    assert pretrained is False
    return base


@pytest.fixture(scope="module")
def legacy_weights_file(tmp_path_factory, reference_base) -> Path:
    """A file in the layout of the real ImageNet ``..._notop.h5`` (legacy Keras HDF5)."""
    h5py = pytest.importorskip("h5py")
    legacy = pytest.importorskip("keras.src.legacy.saving.legacy_h5_format")
    path = tmp_path_factory.mktemp("vgg") / VGG16_NOTOP_WEIGHTS_FILE
    with h5py.File(path, "w") as handle:
        legacy.save_weights_to_hdf5_group(handle, reference_base)
    return path


def assert_same_weights(model: keras.Model, reference: keras.Model) -> None:
    loaded = vgg_layer(model).get_weights()
    saved = reference.get_weights()
    assert len(loaded) == len(saved) == 26
    for a, b in zip(loaded, saved):
        np.testing.assert_array_equal(a, b)


def test_weights_from_a_keras_weights_file(tmp_path, reference_base):
    path = tmp_path / "vgg.weights.h5"  # Keras 3 save_weights wants this suffix
    reference_base.save_weights(path)
    model, info = build_with_info("vgg16", (32, 32, 1), NUM_CLASSES, weights=str(path))
    assert info == {"pretrained": True} and is_pretrained(model)
    assert_same_weights(model, reference_base)
    # a fresh random base differs, so the equality above is not an accident
    fresh, _ = vgg16_base((32, 32, 1), None)
    assert not np.array_equal(fresh.get_weights()[0], reference_base.get_weights()[0])


def test_weights_from_the_legacy_notop_file(tmp_path, legacy_weights_file, reference_base):
    """The remedy file (legacy .h5) loads, also for another image size, and the flag survives
    saving the model as .keras."""
    model = build("vgg16_gru", (64, 64, 1), NUM_CLASSES, weights=legacy_weights_file)
    assert is_pretrained(model)
    assert_same_weights(model, reference_base)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert is_pretrained(loaded)
    assert not is_pretrained(make("vgg16_gru")) and not is_pretrained(make("lenet5"))


def test_missing_weights_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / VGG16_NOTOP_WEIGHTS_FILE
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        build("vgg16", (32, 32, 1), NUM_CLASSES, weights=str(missing))


def test_unusable_weights_file_names_the_path(tmp_path):
    bad = tmp_path / "not_weights.h5"
    bad.write_bytes(b"this is not HDF5")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        build("vgg16", (32, 32, 1), NUM_CLASSES, weights=bad)


def _vgg_download_module():
    """The module whose ``file_utils.get_file`` VGG16(weights="imagenet") calls."""
    return importlib.import_module(keras.applications.VGG16.__module__).file_utils


def test_imagenet_offline_warns_and_starts_random(monkeypatch, capsys):
    calls = []

    def offline(*args, **kwargs):
        calls.append(args)
        raise Exception(
            "URL fetch failure on https://storage.googleapis.com/...: None -- "
            "[Errno -3] Temporary failure in name resolution"
        )

    monkeypatch.setattr(_vgg_download_module(), "get_file", offline)
    monkeypatch.setattr(keras.utils, "get_file", offline)
    model, info = build_with_info("vgg16", (32, 32, 1), NUM_CLASSES, weights="imagenet")
    assert calls, "the download was not attempted through the patched get_file"
    assert info == {"pretrained": False} and not is_pretrained(model)
    assert model.name == "vgg16" and tuple(model.output_shape) == (None, NUM_CLASSES)
    assert vgg_layer(model).trainable_weights == []
    err = capsys.readouterr().err
    assert "ImageNet weights" in err and "could not be loaded" in err
    assert "Temporary failure in name resolution" in err  # the reason
    assert "~/.keras/models" in err  # remedy 1: run once online
    assert VGG16_NOTOP_WEIGHTS_FILE in err and "`weights`" in err  # remedy 2: a local file
    assert len(err.strip().splitlines()) >= 5


def test_imagenet_from_the_keras_cache_is_pretrained(monkeypatch, capsys, legacy_weights_file,
                                                     reference_base):
    """When get_file finds the weights (cache or download), they load and nothing is warned."""
    monkeypatch.setattr(_vgg_download_module(), "get_file",
                        lambda *args, **kwargs: str(legacy_weights_file))
    model, info = build_with_info("vgg16", (32, 32, 1), NUM_CLASSES)  # default: imagenet
    assert info == {"pretrained": True}
    assert_same_weights(model, reference_base)
    assert "could not be loaded" not in capsys.readouterr().err


# --- choosing by name ----------------------------------------------------------------------


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture 'resnet50'") as error:
        build("resnet50", (32, 32, 1), NUM_CLASSES)
    assert all(name in str(error.value) for name in ARCHITECTURES)


def test_unknown_hparam():
    with pytest.raises(ValueError, match="units") as error:
        build("lenet5", (32, 32, 1), NUM_CLASSES, units=64)
    assert "'lenet5'" in str(error.value) and "dropout" in str(error.value)
    with pytest.raises(ValueError, match="weights"):
        build("gru", (32, 32, 1), NUM_CLASSES, weights=None)


def test_default_hparams():
    assert default_hparams("lenet5") == {"dropout": 0.3}
    assert default_hparams("vgg16") == {"weights": "imagenet", "dropout": 0.5}
    assert default_hparams("lenet5_gru") == {
        "units": 128, "dropout": 0.0, "bidirectional": False, "attention": False,
    }
    assert default_hparams("vgg16_gru")["dropout"] == 0.3
    assert default_hparams("rescnn") == {"width": 24, "dropout": 0.3}
    assert make("gru", units=32).get_layer("gru1").units == 32


@pytest.mark.parametrize("shape", [(32, 32, 3), (32, 32), (16, 16, 1)])
def test_bad_input_shape(shape):
    with pytest.raises(ValueError, match="input_shape"):
        zoo.build_lenet5(shape, NUM_CLASSES)

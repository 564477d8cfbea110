"""The frozen-base feature cache: features persist on disk under a digest of the base's weights
and the images, are read back only for the very same pair, and a bad file or folder never
breaks training."""

from __future__ import annotations

import numpy as np
import pytest

from handwriting import labels
from handwriting.models.features import (
    FEATURE_CACHE_ENV,
    FeatureCache,
    feature_cache_folder,
    frozen_feature_split,
)
from handwriting.models.fitting import fit_model, make_reproducible
from tests.conftest import fit_settings

keras = pytest.importorskip("keras")


def extractor(seed: int, scale: float = 1.0):
    """A tiny feature model standing in for a frozen base (unnamed layers: Keras numbers them
    anew in every build)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Rescaling(scale)(inputs)  # no weights: only its configuration tells
    x = keras.layers.Conv2D(4, 3)(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


def images(count: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 8, 8), dtype=np.uint8)


def computed(capsys) -> bool:
    return "computing frozen VGG-16 features" in capsys.readouterr().out


def test_features_persist_and_are_read_back_by_another_cache(tmp_path, capsys):
    model, pictures = extractor(1), images()
    first = FeatureCache(folder=tmp_path).get(model, pictures, seed=0)
    assert computed(capsys) and len(list(tmp_path.glob("*.npy"))) == 1
    second = FeatureCache(folder=tmp_path).get(model, pictures, seed=0)
    assert not computed(capsys)
    np.testing.assert_array_equal(first, second)
    assert not list(tmp_path.glob("*.tmp"))  # the write left no partial file


@pytest.mark.parametrize("other", ["weights", "layer configuration", "images"])
def test_other_weights_layers_or_images_are_computed_again(tmp_path, capsys, other):
    FeatureCache(folder=tmp_path).get(extractor(1), images(), seed=0)
    computed(capsys)
    model, pictures = {"weights": (extractor(2), images()),
                       "layer configuration": (extractor(1, scale=0.5), images()),
                       "images": (extractor(1), images(seed=5))}[other]
    FeatureCache(folder=tmp_path).get(model, pictures, seed=0)
    assert computed(capsys) and len(list(tmp_path.glob("*.npy"))) == 2


def test_a_rebuilt_extractor_finds_its_features(tmp_path, capsys):
    FeatureCache(folder=tmp_path).get(extractor(1), images(), seed=0)
    computed(capsys)
    FeatureCache(folder=tmp_path).get(extractor(1), images(), seed=0)  # new layer names
    assert not computed(capsys)


@pytest.mark.parametrize("bad", ["not an array", "empty", "wrong shape", "wrong dtype"])
def test_a_bad_file_is_computed_again_and_replaced(tmp_path, capsys, bad):
    model, pictures = extractor(1), images()
    good = FeatureCache(folder=tmp_path).get(model, pictures, seed=0)
    (path,) = tmp_path.glob("*.npy")
    if bad in ("not an array", "empty"):
        path.write_bytes(b"not an array" if bad == "not an array" else b"")
    else:
        np.save(path, good[:3] if bad == "wrong shape" else good.astype(np.float64))
    capsys.readouterr()
    again = FeatureCache(folder=tmp_path).get(model, pictures, seed=0)
    captured = capsys.readouterr()
    assert "computing" in captured.out and f"warning: {path}" in captured.err
    np.testing.assert_array_equal(good, again)
    np.testing.assert_array_equal(np.load(path), good)


def test_a_folder_that_cannot_be_written_warns_and_still_gives_features(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    found = FeatureCache(folder=blocker / "features").get(extractor(1), images(), seed=0)
    assert found.shape == (6, 4)
    assert f"set {FEATURE_CACHE_ENV} to a writable folder" in capsys.readouterr().err
    assert blocker.read_text() == "a file where the folder should be"


def test_the_folder_comes_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(FEATURE_CACHE_ENV, str(tmp_path / "here"))
    assert feature_cache_folder() == tmp_path / "here"
    for off in ("off", "OFF", "false", "0"):
        monkeypatch.setenv(FEATURE_CACHE_ENV, off)
        assert feature_cache_folder() is None and FeatureCache().folder is None
    monkeypatch.delenv(FEATURE_CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert feature_cache_folder() == tmp_path / "xdg" / "handwriting" / "features"


@pytest.mark.slow
def test_vgg16_and_vgg16_gru_trainings_share_one_features_file(tmp_path, capsys):
    """What train@vgg16 computes, train@vgg16_gru (same seed, same base) and the searches read:
    the histories are those of a cache-less run."""
    from handwriting.models.zoo import build

    rng = np.random.default_rng(0)
    train = (rng.integers(0, 256, (26, 32, 32), dtype=np.uint8), np.arange(26) % 26)
    val = (train[0][:8], train[1][:8])
    fit = fit_settings(epochs=1)

    def fitted(arch: str, cache: FeatureCache) -> dict:
        make_reproducible(3)
        model = build(arch, (32, 32, 1), labels.NUM_CLASSES, weights=None)
        assert frozen_feature_split(model) is not None
        return fit_model(model, fit, train=train, val=val, seed=3, cache=cache, verbose=0)

    alone = fitted("vgg16", FeatureCache(folder=None))
    computed(capsys)
    assert fitted("vgg16", FeatureCache(folder=tmp_path)) == alone
    assert computed(capsys) and len(list(tmp_path.glob("*.npy"))) == 2  # train and val
    fitted("vgg16_gru", FeatureCache(folder=tmp_path))
    assert not computed(capsys) and len(list(tmp_path.glob("*.npy"))) == 2
    assert fitted("vgg16", FeatureCache(folder=tmp_path)) == alone

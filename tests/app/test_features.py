"""Feature maps of the first convolutions (top-level and inside the nested VGG-16 base), their
mosaic, and the Grad-CAM / saliency overlay the Classify page shows."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from handwriting import labels  # noqa: E402
from handwriting.app.features import (  # noqa: E402
    MAX_CHANNELS,
    conv_layers,
    enlarge,
    explanation,
    feature_maps,
    mosaic,
)
from handwriting.models.zoo import build  # noqa: E402


def model(arch: str) -> keras.Model:
    keras.utils.set_random_seed(5)
    return build(arch, (32, 32, 1), labels.NUM_CLASSES,
                 **({"weights": None} if arch.startswith("vgg16") else {}))


def bar() -> np.ndarray:
    image = np.zeros((32, 32), np.float32)
    image[5:27, 13:18] = 1.0
    return image


def test_lenet5_maps_are_its_first_two_convolutions():
    lenet = model("lenet5")
    maps = feature_maps(lenet, bar())
    assert [(m.layer, m.maps.shape, m.channels) for m in maps] == [
        ("conv1", (28, 28, 6), 6), ("conv2", (10, 10, 16), 16)]
    direct = keras.Model(lenet.inputs, lenet.get_layer("conv1").output)(bar()[None, ..., None])
    np.testing.assert_allclose(maps[0].maps, np.asarray(direct)[0], rtol=1e-5, atol=1e-6)


def test_vgg16_maps_come_from_inside_the_nested_base_and_are_capped():
    vgg = model("vgg16")
    maps = feature_maps(vgg, bar())
    assert [(m.layer, m.maps.shape, m.channels) for m in maps] == [
        ("block1_conv1", (32, 32, MAX_CHANNELS), 64), ("block1_conv2", (32, 32, MAX_CHANNELS), 64)]
    base = next(layer for layer in vgg.layers if isinstance(layer, keras.Model))
    scaled = keras.Model(vgg.inputs, vgg.get_layer("imagenet_mean").output)(bar()[None, ..., None])
    direct = keras.Model(base.inputs, base.get_layer("block1_conv1").output)(scaled)
    np.testing.assert_allclose(maps[0].maps, np.asarray(direct)[0, ..., :MAX_CHANNELS],
                               rtol=1e-4, atol=1e-4)


def test_a_recurrent_model_has_no_maps_and_gets_saliency():
    gru = model("gru")
    assert conv_layers(gru) == [] and feature_maps(gru, bar()) == []
    explained = explanation(gru, bar())
    assert explained.method == "saliency" and explained.overlay.shape == (32, 32, 3)


def test_a_cnn_gets_grad_cam_over_the_image():
    explained = explanation(model("lenet5"), bar())
    assert explained.method == "grad-cam"
    assert explained.overlay.shape == (32, 32, 3) and explained.overlay.dtype == np.uint8


def test_the_mosaic_tiles_every_channel_scaled_to_its_own_range():
    maps = np.zeros((4, 4, 3), np.float32)
    maps[0, 0, 0] = 5.0      # channel 0: one bright pixel
    maps[..., 1] = 2.0       # channel 1: flat, so all dark
    maps[3, 3, 2] = -1.0     # channel 2: negative values still span black to white
    picture = mosaic(maps, columns=3, tile=8, gap=2)
    assert picture.shape == (8, 3 * 8 + 2 * 2) and picture.dtype == np.uint8
    assert picture[0, 0] == 255 and picture[7, 7] == 0          # channel 0
    assert picture[:, 10:18].max() == 0                          # channel 1
    assert picture[7, 27] == 0 and picture[0, 20] == 255         # channel 2
    assert (picture[:, 8:10] == 255).all()                       # the white gap


def test_enlarge_keeps_square_pixels():
    small = np.arange(4, dtype=np.uint8).reshape(2, 2)
    big = enlarge(small, side=8)
    assert big.shape == (8, 8) and (big[:4, :4] == 0).all() and (big[4:, 4:] == 3).all()

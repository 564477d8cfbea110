"""Augmentation: seeded, keeps the letter in frame, actually transforms."""

import numpy as np

from handwriting.augmentation import (
    augment_image,
    augment_uint8,
    one_opencv_thread,
)
from handwriting.imaging import preprocess, to_uint8
from tests.conftest import variant_ranges
from tests.unit.test_imaging import glyph

ORIGINAL = preprocess(glyph(), 32)


def test_same_seed_same_variant_and_different_seeds_differ():
    settings = variant_ranges()
    a = augment_image(ORIGINAL, np.random.default_rng(7), settings)
    b = augment_image(ORIGINAL, np.random.default_rng(7), settings)
    c = augment_image(ORIGINAL, np.random.default_rng(8), settings)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_variant_is_a_valid_input_that_differs_from_the_original():
    variant = augment_image(ORIGINAL, np.random.default_rng(1), variant_ranges())
    assert variant.shape == ORIGINAL.shape and variant.dtype == np.float32
    assert 0.0 <= variant.min() and variant.max() <= 1.0
    assert variant.max() > 0.9  # the letter is still there
    assert np.abs(variant - ORIGINAL).mean() > 0.01


def test_no_transformation_keeps_the_image():
    nothing = variant_ranges(rotation_degrees=0, translation=0, scale=0, shear=0,
                              elastic_alpha=0, thickness_probability=0, noise_std=0)
    variant = augment_image(ORIGINAL, np.random.default_rng(3), nothing)
    assert np.abs(variant - ORIGINAL).mean() < 0.03  # reframing only: a sub-pixel zoom


def test_strong_rotation_does_not_cut_the_letter_off():
    strong = variant_ranges(rotation_degrees=45, translation=0, scale=0, shear=0,
                             elastic_alpha=0, thickness_probability=0)
    for seed in range(10):
        variant = augment_image(ORIGINAL, np.random.default_rng(seed), strong)
        # reframed: the margin rows and columns stay empty
        assert variant[0].max() == 0 and variant[-1].max() == 0
        assert variant[:, 0].max() == 0 and variant[:, -1].max() == 0


def test_the_uint8_variant_is_the_float_variant_rounded():
    settings = [variant_ranges(), variant_ranges(noise_std=0.05, thickness_probability=1.0),
                variant_ranges(elastic_alpha=0.0, rotation_degrees=30)]
    for seed in range(30):
        chosen = settings[seed % len(settings)]
        as_float = augment_image(ORIGINAL, np.random.default_rng(seed), chosen)
        as_uint8 = augment_uint8(ORIGINAL, np.random.default_rng(seed), chosen)
        assert as_uint8.dtype == np.uint8
        np.testing.assert_array_equal(as_uint8, to_uint8(as_float))


def test_opencv_on_one_thread_draws_the_same_pixels():
    import cv2

    threads = cv2.getNumThreads()
    settings = variant_ranges(thickness_probability=0.5)
    images = [preprocess(glyph(), size) for size in (32, 64)]
    try:
        cv2.setNumThreads(max(2, threads))
        before = [augment_uint8(image, np.random.default_rng(seed), settings)
                  for image in images for seed in range(20)]
        one_opencv_thread()
        assert cv2.getNumThreads() == 1
        after = [augment_uint8(image, np.random.default_rng(seed), settings)
                 for image in images for seed in range(20)]
    finally:
        cv2.setNumThreads(threads)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def test_the_augment_speed_benchmark_compares_the_same_pixels(capsys):
    import cv2

    from tests.conftest import benchmark_module

    module = benchmark_module("augment_speed")
    threads = cv2.getNumThreads()
    try:
        assert module.main(["--images", "40", "--repeats", "1"]) == 0
    finally:
        cv2.setNumThreads(threads)
    printed = capsys.readouterr().out
    assert "one thread" in printed and "the same pixels: True" in printed

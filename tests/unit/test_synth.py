"""Tests of the synthetic handwriting generator (handwriting.synth)."""

from __future__ import annotations

import itertools
import os
import string
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from handwriting.synth import (
    FONT_STYLES,
    DrawSettings,
    Writer,
    alternate_skeletons,
    choose_skeleton,
    draw_letter,
    font_skeleton,
    render_trace,
    style_skeleton,
)
from handwriting.synth import HERSHEY_DEFAULT
from handwriting.synth.skeletons import HERSHEY_STYLES, _dedupe_parallel, join_segments

LETTERS = string.ascii_uppercase + string.ascii_lowercase


def _background(img: np.ndarray) -> float:
    """Background level: the median of the border pixels (the letter never touches the border)."""
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    return float(np.median(border))


def _ink_mask(img: np.ndarray, threshold: float = 60) -> np.ndarray:
    return np.abs(img.astype(np.int16) - _background(img)) > threshold


def _assert_letter_image(img: np.ndarray, what: str) -> None:
    assert isinstance(img, np.ndarray), what
    assert img.ndim == 2 and img.dtype == np.uint8, (what, img.shape, img.dtype)
    ink = _ink_mask(img)
    # Clear contrast: some pixels differ from the background by > 80 grey levels, and the
    # letter is a real shape, not a speck.
    peak = np.abs(img.astype(np.int16) - _background(img)).max()
    assert peak > 80, f"{what}: peak contrast {peak}"
    assert ink.sum() >= 25, f"{what}: only {ink.sum()} ink pixels"
    ys, xs = np.nonzero(ink)
    assert max(np.ptp(ys), np.ptp(xs)) + 1 >= 0.3 * min(img.shape), f"{what}: letter too small"


def _raster(skeleton, n: int = 32) -> np.ndarray:
    im = np.zeros((n, n), np.uint8)
    for s in skeleton.strokes:
        cv2.polylines(im, [np.round(s * (n - 5) + 2).astype(np.int32)], False, 1, 2)
    return im.astype(bool)


# ---------------------------------------------------------------------------------------------
# Determinism


@pytest.mark.parametrize("char", ["A", "g", "W", "i"])
def test_same_seed_gives_byte_identical_image(char):
    a = draw_letter(char, np.random.default_rng(1234))
    b = draw_letter(char, np.random.default_rng(1234))
    assert a.shape == b.shape
    assert a.tobytes() == b.tobytes()


def test_different_seeds_give_different_images():
    images = [draw_letter("e", np.random.default_rng(seed)) for seed in range(12)]
    for a, b in itertools.combinations(images, 2):
        assert a.shape != b.shape or not np.array_equal(a, b)


def test_consecutive_draws_from_one_rng_differ():
    rng = np.random.default_rng(7)
    a, b = draw_letter("K", rng), draw_letter("K", rng)
    assert a.shape != b.shape or not np.array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# Every letter, every style


@pytest.mark.parametrize("style", FONT_STYLES)
def test_every_letter_renders_in_every_style(style):
    rng = np.random.default_rng(100 + FONT_STYLES.index(style))
    for char in LETTERS:
        # The style's own glyph (never a hand-made alternative)...
        skeleton = choose_skeleton(char, rng, (style,), hand_share=0.0)
        assert skeleton.source == style
        trace = Writer.sample(rng).write(skeleton, rng)
        _assert_letter_image(render_trace(trace, rng, 64, 64), f"{style} {char!r} skeleton")
        # ...and through the public entry point.
        img = draw_letter(char, rng, DrawSettings(styles=(style,), canvas_sizes=(64, 96), invert_probability=0.0))
        _assert_letter_image(img, f"{style} {char!r}")


@pytest.mark.parametrize("style", FONT_STYLES)
def test_skeletons_are_non_empty_and_normalised(style):
    for char in LETTERS:
        sk = style_skeleton(style, char)
        assert len(sk.strokes) >= 1, (style, char)
        pts = np.concatenate(sk.strokes)
        assert pts.shape[1] == 2 and np.isfinite(pts).all()
        assert pts.min() >= -1e-9 and pts.max() <= 1 + 1e-9, (style, char)
        assert pts.max(0).max() == pytest.approx(1.0), (style, char)  # longer side spans the box
        assert sk.length > 0.7, (style, char, sk.length)
        assert 0.3 < sk.extent < 2.0, (style, char, sk.extent)


def test_styles_draw_different_shapes():
    # Identical skeletons across styles would give an IoU of 1 for every letter.
    for a, b in itertools.combinations(FONT_STYLES, 2):
        ious = []
        for char in LETTERS:
            x, y = _raster(style_skeleton(a, char)), _raster(style_skeleton(b, char))
            ious.append((x & y).sum() / (x | y).sum())
        assert np.mean(ious) < 0.85, (a, b, np.mean(ious))


def test_letters_within_a_style_differ():
    rasters = {c: _raster(font_skeleton("futural", c)) for c in LETTERS}
    for a, b in [("O", "Q"), ("b", "d"), ("n", "h"), ("E", "F"), ("u", "v")]:
        assert not np.array_equal(rasters[a], rasters[b])


def test_alternate_forms_are_valid_and_distinct_from_fonts():
    with_alternates = [c for c in LETTERS if alternate_skeletons(c)]
    assert {"a", "g", "t", "z", "I", "J"} <= set(with_alternates)
    for char in with_alternates:
        fonts = [_raster(font_skeleton(style, char)) for style in HERSHEY_DEFAULT]
        for sk in alternate_skeletons(char):
            pts = np.concatenate(sk.strokes)
            assert pts.min() >= -1e-9 and pts.max() <= 1 + 1e-9
            assert sk.length > 0.9
            # A form of its own, not a copy of a font's glyph.
            x = _raster(sk)
            assert max((x & y).sum() / (x | y).sum() for y in fonts) < 0.9, (char, sk.source)


def test_forms_vary_within_one_letter():
    rng = np.random.default_rng(3)
    sources = {choose_skeleton("a", rng).source for _ in range(200)}
    # Several font styles and at least one hand-made form.
    assert len(sources) >= 4
    assert any(s.startswith("hand:") for s in sources)


# ---------------------------------------------------------------------------------------------
# Polarity and canvas


def _is_light_background(img: np.ndarray) -> bool:
    return _background(img) > 127


def test_both_polarities_occur_with_half_probability():
    rng = np.random.default_rng(11)
    light = [_is_light_background(draw_letter(LETTERS[i % 52], rng, DrawSettings(invert_probability=0.5, canvas_sizes=(64,)))) for i in range(200)]
    assert 60 <= sum(light) <= 140


def test_only_dark_on_light_with_zero_probability():
    rng = np.random.default_rng(12)
    for i in range(150):
        img = draw_letter(LETTERS[i % 52], rng, DrawSettings(invert_probability=0.0, canvas_sizes=(64,)))
        assert _is_light_background(img)
        # Ink is darker than the paper.
        assert img[_ink_mask(img)].mean() < _background(img)


def test_only_light_on_dark_with_probability_one():
    rng = np.random.default_rng(13)
    for i in range(40):
        img = draw_letter(LETTERS[i % 52], rng, DrawSettings(invert_probability=1.0, canvas_sizes=(64,)))
        assert not _is_light_background(img)


def test_canvas_sizes_come_from_the_argument():
    rng = np.random.default_rng(14)
    sizes = (40, 72, 100)
    shapes = [draw_letter(LETTERS[i % 52], rng, DrawSettings(canvas_sizes=sizes)).shape for i in range(200)]
    assert all(h in sizes and w in sizes for h, w in shapes)
    assert {h for h, _ in shapes} == set(sizes)
    squares = sum(h == w for h, w in shapes)
    assert squares > 100  # mostly square...
    assert squares < 200  # ...sometimes not


def test_default_canvas_sizes():
    rng = np.random.default_rng(15)
    for i in range(60):
        h, w = draw_letter(LETTERS[i % 52], rng).shape
        assert h in (64, 96, 128, 200, 256) and w in (64, 96, 128, 200, 256)


def test_single_canvas_size_is_always_square():
    rng = np.random.default_rng(16)
    assert {draw_letter("x", rng, DrawSettings(canvas_sizes=[80])).shape for _ in range(30)} == {(80, 80)}


def test_letter_size_and_placement():
    rng = np.random.default_rng(17)
    fractions, centres = [], []
    for i in range(150):
        img = draw_letter(LETTERS[i % 52], rng, DrawSettings(canvas_sizes=(128,), invert_probability=0.0))
        ys, xs = np.nonzero(_ink_mask(img))
        fractions.append(max(np.ptp(ys), np.ptp(xs)) / 128)
        centres.append(((xs.min() + xs.max()) / 2 - 64) / 128)
    assert 0.45 < np.median(fractions) < 0.85
    assert np.percentile(fractions, 5) > 0.3
    # Not always centred.
    assert np.std(centres) > 0.02


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("bad", ["1", "ab", "", " ", "é", "Ä"])
def test_non_letter_raises_value_error_naming_it(bad):
    with pytest.raises(ValueError) as err:
        draw_letter(bad, np.random.default_rng(0))
    assert repr(bad) in str(err.value)
    assert "A-Z" in str(err.value)


def test_non_string_char_raises_value_error():
    with pytest.raises(ValueError):
        draw_letter(65, np.random.default_rng(0))  # type: ignore[arg-type]


def test_unknown_style_raises_value_error_listing_valid_styles():
    with pytest.raises(ValueError) as err:
        draw_letter("a", np.random.default_rng(0), DrawSettings(styles=("futural", "gothiceng")))
    msg = str(err.value)
    assert "'gothiceng'" in msg
    for style in FONT_STYLES:
        assert style in msg


def test_other_bad_arguments_raise_value_error():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        draw_letter("a", rng, DrawSettings(styles=()))
    with pytest.raises(ValueError):
        draw_letter("a", rng, DrawSettings(invert_probability=1.5))
    with pytest.raises(ValueError):
        draw_letter("a", rng, DrawSettings(canvas_sizes=()))
    with pytest.raises(ValueError):
        draw_letter("a", rng, DrawSettings(canvas_sizes=(8,)))


def test_every_accepted_style_works():
    rng = np.random.default_rng(5)
    for style in HERSHEY_STYLES:
        _assert_letter_image(draw_letter("R", rng, DrawSettings(styles=[style], invert_probability=0.0)), style)


# ---------------------------------------------------------------------------------------------
# Internals worth pinning down


def test_join_segments_chains_at_shared_endpoints_and_keeps_t_junctions_apart():
    # An 'L' drawn as two segments becomes one polyline; a separate segment stays separate.
    polys = join_segments([((0, 0), (0, 1)), ((0, 1), (1, 1)), ((5, 5), (6, 6))])
    assert sorted(len(p) for p in polys) == [2, 3]
    # A 'T': the bar continues straight through the junction, the stem is its own stroke.
    polys = join_segments([((-1, 0), (0, 0)), ((0, 0), (1, 0)), ((0, 0), (0, 2))])
    assert len(polys) == 2
    bar = max(polys, key=lambda p: np.ptp(p[:, 0]))
    assert np.ptp(bar[:, 0]) == 2 and np.ptp(bar[:, 1]) == 0


def test_dedupe_keeps_one_of_parallel_lines_but_keeps_crossings():
    a = np.array([[0.0, 0.0], [0.0, 20.0]])
    b = np.array([[1.0, 0.0], [1.0, 20.0]])  # a duplicate line one unit away
    c = np.array([[-5.0, 10.0], [6.0, 10.0]])  # a bar crossing both
    kept = _dedupe_parallel([a, b, c], radius=1.35, min_len=1.6)
    xs = [np.ptp(k[:, 0]) for k in kept]
    ys = [np.ptp(k[:, 1]) for k in kept]
    assert sum(y > 15 for y in ys) == 1  # one vertical line left
    assert sum(x > 10 for x in xs) == 1  # the crossing bar survives whole


def test_multi_line_fonts_are_reduced_to_single_lines():
    # timesr draws the stem of 'I' with two parallel lines and adds serifs; handwriting has one.
    sk = font_skeleton("timesr", "I")
    assert len(sk.strokes) == 1


def test_import_does_no_work():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    code = ("import sys, handwriting.synth; print(any(m in sys.modules for m in "
            "('HersheyFonts', 'fontpkg', 'skimage', 'PIL.ImageFont')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"


def test_writer_distorts_the_skeleton():
    sk = font_skeleton("futural", "H")
    rng = np.random.default_rng(9)
    a = Writer.sample(rng).write(sk, rng)
    b = Writer.sample(rng).write(sk, rng)
    assert len(a.strokes) == len(b.strokes) == len(sk.strokes)
    # Two writers never draw the same trace, and neither reproduces the font exactly.
    n = min(len(a.strokes[0]), len(b.strokes[0]), len(sk.strokes[0]))
    pa, pb = a.strokes[0][:n], b.strokes[0][:n]
    font = sk.strokes[0][:n] * sk.extent
    assert not np.allclose(pa - pa.mean(0), pb - pb.mean(0), atol=1e-3)
    assert not np.allclose(pa - pa.mean(0), font - font.mean(0), atol=1e-3)
    assert all(np.all(w > 0) for w in a.widths)


def test_benchmark_script_exists_and_is_runnable_module():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "synth_speed.py"
    assert path.is_file()
    compile(path.read_text(), str(path), "exec")

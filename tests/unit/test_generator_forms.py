"""The generator's letter forms: font families traced into strokes, the allograph table, and the
stroke-weight case cue of generated letters."""

from __future__ import annotations

import numpy as np
import pytest

from handwriting import labels
from handwriting.imaging import preprocess, to_uint8
from handwriting.synth import (
    FONT_FAMILIES,
    DrawSettings,
    FONT_FORM,
    LETTERS,
    Writer,
    allograph_table,
    draw_letter,
    hand_forms,
    render_trace,
    sample_rng,
    style_skeleton,
)
from handwriting.synth import fonts, measure
from handwriting.synth.sheet import allograph_sheet


@pytest.mark.parametrize("family", sorted(FONT_FAMILIES))
def test_font_family_loads_with_its_recorded_licence_and_draws_every_letter(family):
    assert fonts.font_licence(family) == FONT_FAMILIES[family]
    assert FONT_FAMILIES[family] in {"OFL-1.1", "Apache-2.0"}
    rng = np.random.default_rng(11)
    for char in LETTERS:
        skeleton = style_skeleton(family, char)
        assert skeleton.source == family
        points = np.concatenate(skeleton.strokes)
        assert np.isfinite(points).all() and points.min() >= -1e-9 and points.max() <= 1 + 1e-9
        assert skeleton.length > 0.5, (family, char, skeleton.length)
        image = draw_letter(char, rng, DrawSettings(styles=(family,), hand_share=0.0,
                            invert_probability=0.0, canvas_sizes=(64,)))
        assert image.dtype == np.uint8 and image.shape == (64, 64)
        assert (image < 128).sum() >= 20, (family, char)


def test_traced_strokes_are_centre_lines_not_outlines():
    # An 'O' outline would trace as two rings; its centre line is one closed stroke, and an 'l'
    # is one stroke, not the two sides of a bar.
    for family in ("quicksand", "delius", "kalam"):
        assert len(style_skeleton(family, "O").strokes) == 1, family
        assert len(style_skeleton(family, "l").strokes) == 1, family
    # The dot of an 'i' survives as its own stroke.
    assert len(style_skeleton("quicksand", "i").strokes) == 2


def test_small_letters_are_drawn_smaller_than_capitals():
    # Skeleton extents are in cap heights of the family: an 'o' is about the x-height.
    for family in FONT_FAMILIES:
        if family == "permanent-marker":  # capitals only (its small letters are small capitals)
            continue
        assert style_skeleton(family, "o").extent < 0.9 * style_skeleton(family, "O").extent


def test_unknown_family_and_missing_package_give_clear_errors(monkeypatch):
    with pytest.raises(fonts.FontError, match="valid families: caveat"):
        fonts.font_file("comic-sans")
    import fontpkg

    def missing(name):
        raise fontpkg.FamilyNotInstalled(name)

    fonts.font_file.cache_clear()
    monkeypatch.setattr(fontpkg, "family", missing)
    try:
        with pytest.raises(fonts.FontError, match="pip install fontpkg-zeyada"):
            fonts.font_file("zeyada")
    finally:
        fonts.font_file.cache_clear()


def test_allograph_table_covers_every_letter_and_every_form_draws():
    table = allograph_table()
    assert set(table) == set(LETTERS)
    rng = np.random.default_rng(3)
    for char, forms in table.items():
        names = [name for name, _ in forms]
        assert names[0] == FONT_FORM and len(set(names)) == len(names)
        weights = np.array([w for _, w in forms])
        assert (weights > 0).all() and weights.sum() == pytest.approx(1.0), char
        made = hand_forms(char)
        assert set(names[1:]) == set(made), char
        for name in names[1:]:
            trace = Writer.sample(rng).write(made[name], rng)
            image = render_trace(trace, rng, 64, 64)
            assert (image < 128).sum() >= 20, (char, name)
    # The forms the issue names are there.
    for char, form in [("a", "single-storey"), ("g", "single-storey, hooked tail"),
                       ("I", "with bars"), ("J", "with top bar"), ("l", "loop"),
                       ("y", "u with curved tail"), ("t", "hooked foot")]:
        assert form in dict(table[char]), (char, form)


def test_hand_share_zero_draws_only_style_glyphs_and_weights_are_followed():
    from handwriting.synth import choose_skeleton

    rng = np.random.default_rng(0)
    assert all(not choose_skeleton("a", rng, ("futural",), hand_share=0.0).source
               .startswith("hand:") for _ in range(100))
    sources = [choose_skeleton("a", rng, ("futural",)).source for _ in range(2000)]
    share = np.mean([s.startswith("hand:") for s in sources])
    expected = 1.0 - dict(allograph_table()["a"])[FONT_FORM]
    assert abs(share - expected) < 0.05, (share, expected)


def test_permanent_marker_is_not_used_for_small_letters_when_others_are_allowed():
    from handwriting.synth.allographs import choose_style

    rng = np.random.default_rng(1)
    picked = {choose_style("e", rng, ("permanent-marker", "kalam")) for _ in range(200)}
    assert picked == {"kalam"}


@pytest.mark.parametrize("style", ["caveat", "futural"])
def test_same_seed_gives_byte_identical_images(style):
    a = draw_letter("g", sample_rng(42, "g", 7), DrawSettings(styles=(style, "kalam")))
    b = draw_letter("g", sample_rng(42, "g", 7), DrawSettings(styles=(style, "kalam")))
    assert a.shape == b.shape and a.tobytes() == b.tobytes()


def test_bad_pen_scale_and_hand_share_raise():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="pen_scale"):
        draw_letter("a", rng, DrawSettings(pen_scale=0.0))
    with pytest.raises(ValueError, match="hand_share"):
        draw_letter("a", rng, DrawSettings(hand_share=-1.0))


def test_pen_scale_thickens_strokes():
    def weight(scale):
        images = [to_uint8(preprocess(draw_letter("H", sample_rng(1, "H", n), DrawSettings(pen_scale=scale)),
                                      32)) for n in range(30)]
        return np.median([measure.relative_stroke_width(i) for i in images])

    assert weight(1.6) > 1.15 * weight(1.0)


def test_generated_small_letters_have_heavier_strokes_than_capitals():
    # The case cue of real writing: the same pen on a smaller letter, once scaled to the model
    # input, is relatively thicker. It must hold for each of the look-alike letters.
    images, ids = [], []
    for letter in measure.LOOKALIKE:
        for char in (letter.upper(), letter.lower()):
            for n in range(40):
                images.append(to_uint8(preprocess(draw_letter(char, sample_rng(5, char, n)), 32)))
                ids.append(labels.index_of(char))
    weights = measure.case_stroke_weights(np.stack(images), np.array(ids))
    assert set(weights) == set(measure.LOOKALIKE)
    for letter, w in weights.items():
        assert w["lower"] > w["upper"], (letter, w)
    summary = measure.summary(weights)
    assert summary["ratio"] > 1.1


def test_relative_stroke_width_measures_thickness():
    thin, thick = np.zeros((32, 32), np.uint8), np.zeros((32, 32), np.uint8)
    thin[4:28, 14:17] = 255
    thick[4:28, 12:20] = 255
    assert measure.relative_stroke_width(thick) > 2 * measure.relative_stroke_width(thin)
    assert 0.2 < measure.relative_stroke_width(thick) < 0.45  # about 8 / 24
    assert np.isnan(measure.relative_stroke_width(np.zeros((8, 8), np.uint8)))


def test_allograph_sheet_shows_every_letter(tmp_path):
    import cv2

    path = tmp_path / "allographs.png"
    allograph_sheet(path, ("futural", "caveat"), tile=20)
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    assert image is not None and image.shape[0] >= 52 * 20
    # Ink in the font columns and in the hand-made columns.
    assert (image < 100).mean() > 0.02


def test_generated_files_do_not_depend_on_the_worker_count(tmp_path, monkeypatch):
    import dataclasses

    from handwriting.stages import raw
    from tests.conftest import project_params

    synthetic = dataclasses.replace(project_params().raw.synthetic,
                                    per_class=1, per_class_overrides={"r": 2})
    outputs = []
    for workers in (1, 2):
        monkeypatch.setattr(raw, "_workers", lambda workers=workers: workers)
        out = tmp_path / f"w{workers}"
        assert raw.generate_synthetic(synthetic, 42, out) == 53
        outputs.append({p.relative_to(out).as_posix(): p.read_bytes()
                        for p in sorted(out.rglob("*.png"))})
    assert len(outputs[0]) == 53 and outputs[0] == outputs[1]

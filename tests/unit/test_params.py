"""params.yaml: the real file loads; typos and wrong types fail loudly, naming the key."""

from pathlib import Path

import pytest
import yaml

from handwriting.params import ParamsError, load_params

REPO = Path(__file__).resolve().parents[2]


def test_the_repository_params_load():
    params = load_params(REPO / "params.yaml")
    assert params.raw.source == "synthetic"
    assert params.preprocessing.image_size == params.base.image_size
    assert params.raw.synthetic.per_class_overrides["r"] == 2 * params.raw.synthetic.per_class


def write(tmp_path, change):
    values = yaml.safe_load((REPO / "params.yaml").read_text())
    change(values)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_unknown_key_names_the_key(tmp_path):
    path = write(tmp_path, lambda v: v["augment"].update(copeis=3))
    with pytest.raises(ParamsError, match=r"unknown key\(s\) augment\.copeis"):
        load_params(path)


def test_missing_key_names_the_key(tmp_path):
    path = write(tmp_path, lambda v: v["split"].pop("val"))
    with pytest.raises(ParamsError, match="missing key 'split.val'"):
        load_params(path)


def test_wrong_type_names_the_key(tmp_path):
    path = write(tmp_path, lambda v: v["base"].update(seed="forty-two"))
    with pytest.raises(ParamsError, match="'base.seed' must be an integer"):
        load_params(path)


def test_missing_file_says_where_to_run(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")


def test_sections_a_stage_does_not_need_may_be_absent(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("base: {seed: 1, image_size: 32, deterministic: true}\npreprocess: {margin: 0.1, max_pixels: 100}\n")
    params = load_params(path)
    assert params.raw is None and params.base.seed == 1


def test_unknown_generator_style_is_named_with_the_valid_ones(tmp_path):
    from handwriting.stages.raw import generate_synthetic

    path = write(tmp_path, lambda v: v["raw"]["synthetic"].update(styles=["futural", "comic"]))
    params = load_params(path)
    with pytest.raises(ParamsError, match=r"raw\.synthetic\.styles .*'comic'.*caveat"):
        generate_synthetic(params.raw.synthetic, 0, tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


@pytest.mark.parametrize("key,value", [("pen_scale", 0), ("hand_share", -0.5),
                                       ("pen_scale", float("inf")), ("hand_share", float("nan"))])
def test_bad_generator_scales_name_the_key(tmp_path, key, value):
    from handwriting.stages.raw import drawing_settings

    path = write(tmp_path, lambda v: v["raw"]["synthetic"].update({key: value}))
    with pytest.raises(ParamsError, match=f"raw.synthetic.{key}"):
        drawing_settings(load_params(path).raw.synthetic)


def test_an_empty_style_list_says_so(tmp_path):
    from handwriting.stages.raw import drawing_settings

    path = write(tmp_path, lambda v: v["raw"]["synthetic"].update(styles=[]))
    with pytest.raises(ParamsError, match="raw.synthetic.styles must list at least one style"):
        drawing_settings(load_params(path).raw.synthetic)


def test_the_generator_owns_its_settings(tmp_path):
    """A raw.synthetic key besides the counts goes to the generator's DrawSettings: a typo is
    named there with the known keys, and the values reach the record unchanged."""
    from handwriting.stages.raw import drawing_settings

    params = load_params(write(tmp_path, lambda v: None))
    drawing = drawing_settings(params.raw.synthetic)
    values = yaml.safe_load((tmp_path / "params.yaml").read_text())["raw"]["synthetic"]
    assert drawing.pen_scale == values["pen_scale"]
    assert drawing.styles == tuple(values["styles"])
    assert set(params.raw.synthetic.drawing) == set(values) - {"per_class",
                                                                "per_class_overrides"}
    path = write(tmp_path, lambda v: v["raw"]["synthetic"].update(pen_scal=1.0))
    with pytest.raises(ParamsError, match="unknown key.*pen_scal;.*pen_scale"):
        drawing_settings(load_params(path).raw.synthetic)


def test_every_section_is_a_typed_record_with_its_open_keys_kept_apart():
    from handwriting.params import Evaluate, Train, Tune

    params = load_params(REPO / "params.yaml")
    assert isinstance(params.train, Train) and isinstance(params.tune, Tune)
    assert isinstance(params.evaluate, Evaluate)
    # train.<arch> and tune.<arch>: one open mapping per architecture, no other key there
    assert set(params.train.sections) == set(params.train.architectures)
    assert set(params.tune.spaces) == set(params.train.architectures)
    assert params.train.defaults["optimizer"] == "adam"


@pytest.mark.parametrize("section, change, message", [
    ("tune", {"n_trials": 0}, r"tune\.n_trials must be a whole number, 1 or more"),
    ("tune", {"sampler": "grd"}, r"tune\.sampler must be one of random, grid, tpe"),
    ("evaluate", {"ensemble": "mean"}, r"evaluate\.ensemble must be one of soft, hard"),
    ("export", {"unsure_keep_correct": 0}, r"export\.unsure_keep_correct must be in \(0, 1\]"),
    ("base", {"image_size": 4}, r"base\.image_size must be between 8 and 512"),
])
def test_a_record_s_own_check_names_the_key(tmp_path, section, change, message):
    path = write(tmp_path, lambda v: v[section].update(change))
    with pytest.raises(ParamsError, match=f"^params.yaml: {message}"):
        load_params(path)


def test_a_stage_names_the_sections_it_needs_and_params_yaml_lacks(tmp_path):
    path = write(tmp_path, lambda v: [v.pop("evaluate"), v.pop("export")])
    params = load_params(path)
    params.require("train", "tune")
    with pytest.raises(ParamsError, match="has no evaluate or export section"):
        params.require("train", "evaluate", "export")

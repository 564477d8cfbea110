"""Balance stage: a class with no image and a per_class above the smallest class are clear
errors; the stage turns them into one line."""

import pytest
import yaml

from handwriting import labels
from handwriting.params import ParamsError
from handwriting.stages import balance
from handwriting.stages.balance import MissingClassError, choose
from tests.conftest import repo_params


def files(per_class: int) -> dict[str, list[str]]:
    return {char: [f"{labels.folder_of(char)}/{k}.png" for k in range(per_class)]
            for char in labels.CLASSES}


def test_every_class_keeps_per_class_images_seeded():
    chosen = choose(files(5), 3, seed=0)
    assert all(len(found) == 3 for found in chosen.values())
    assert chosen == choose(files(5), 3, seed=0)
    assert choose(files(5), None, seed=0) == files(5)


def test_a_class_with_no_image_is_a_clear_error():
    found = files(2)
    found["b"] = []
    with pytest.raises(MissingClassError, match="^no images for b; every one of the 52"):
        choose(found, None, seed=0)


def test_per_class_above_the_smallest_class_is_a_params_error():
    found = files(3)
    found["Q"] = found["Q"][:2]
    with pytest.raises(ParamsError, match=r"^balance.per_class=3 but Q has fewer images "
                                          r"\(smallest class: 2\)"):
        choose(found, 3, seed=0)


def test_the_stage_exits_with_one_line_naming_the_stage(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(repo_params()))
    with pytest.raises(SystemExit, match="^balance: no images for A B "):
        balance.main(["--params", str(tmp_path / "params.yaml"), "--raw", str(tmp_path / "raw"),
                      "--out", str(tmp_path / "balanced"), "--metrics", str(tmp_path / "m.json"),
                      "--counts", str(tmp_path / "counts.csv"),
                      "--preview", str(tmp_path / "preview.png")])
    assert not (tmp_path / "balanced").exists()

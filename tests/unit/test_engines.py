"""Training engines (:mod:`handwriting.models.engine`): the setting and its bad values, one
backend per process, and the NumPy batches the JAX engine reads (the engines across processes:
tests/integration/test_engine_processes.py)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from handwriting import labels
from handwriting.models.engine import ENGINES, EngineError, engine, use_engine
from handwriting.models.search import tune_settings
from handwriting.params import ParamsError, load_params
from tests.conftest import fit_settings, project_params, repo_params, variant_ranges

pytest.importorskip("jax")

ARCHS = ("lenet5", "gru")


def test_the_engines_and_their_backends():
    assert set(ENGINES) == {"tensorflow", "tensorflow-xla", "jax"}
    assert engine("tensorflow").jit_compile is False
    assert engine("tensorflow-xla").backend == "tensorflow"
    assert engine("jax").backend == "jax"
    with pytest.raises(ParamsError, match="engine must be one of tensorflow, tensorflow-xla, jax"):
        engine("torch")


def test_a_bad_engine_setting_names_the_key_and_the_choices(tmp_path):
    with pytest.raises(ParamsError, match=r"engine must be one of .*got 'numpy'"):
        fit_settings(engine="numpy")
    values = repo_params()
    values["train"]["gru"]["engine"] = "jaxx"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(values))
    from handwriting.models.training import arch_settings

    with pytest.raises(ParamsError, match=r"train\.gru\.engine must be one of"):
        arch_settings(load_params(path).train, "gru")


def test_a_process_trains_on_one_backend():
    import keras  # the test process runs Keras on TensorFlow (tests/conftest.py)

    assert keras.backend.backend() == "tensorflow"
    assert use_engine("tensorflow").jit_compile is False
    assert use_engine("tensorflow-xla").jit_compile is True
    with pytest.raises(EngineError, match="already runs on tensorflow in this process; run the "
                                          "stage in a new process"):
        use_engine("jax")
    with pytest.raises(EngineError):  # fit_model checks it too, before anything is trained
        from handwriting.models.fitting import fit_model
        from handwriting.models.zoo import build

        images = np.zeros((8, 32, 32), np.uint8)
        fit_model(build("lenet5", (32, 32, 1), labels.NUM_CLASSES), fit_settings(engine="jax"),
                  train=(images, np.zeros(8, int)), val=(images, np.zeros(8, int)), seed=0)


def test_an_engine_at_other_steps_per_call_is_a_renamed_copy():
    one = engine("tensorflow").at_steps_per_call(1, name="tensorflow-before")
    assert (one.name, one.backend, one.steps_per_execution) == ("tensorflow-before",
                                                               "tensorflow", 1)
    assert engine("tensorflow").steps_per_execution > 1  # the registry's engine is unchanged
    assert engine("tensorflow").at_steps_per_call(4).name == "tensorflow"


@pytest.mark.parametrize("arch", ["lenet5", "vgg16_gru"])
def test_tensorflow_runs_several_steps_a_call_with_the_same_weights_as_one(arch, monkeypatch):
    """The TensorFlow engines loop over their steps inside the graph (a whole model on tf.data,
    a VGG model's head on cached features); the weights are those of one step per call, bit
    for bit, also where an epoch's last call runs fewer steps (20 steps an epoch, 3 epochs)."""
    from handwriting.models import engine as engines
    from handwriting.models.features import FeatureCache
    from handwriting.models.fitting import fit_model, make_reproducible
    from handwriting.models.zoo import build

    assert engine("tensorflow").steps_per_execution > 1
    assert engine("tensorflow-xla").steps_per_execution > 1
    assert engine("jax").steps_per_execution == 1  # Keras's JAX trainer loops in Python
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (320, 32, 32), dtype=np.uint8)
    classes = np.arange(320) % labels.NUM_CLASSES
    extra = {"weights": None, "units": 8} if arch == "vgg16_gru" else {}
    cache = FeatureCache(folder=None)  # the VGG base's features, computed once for both fits

    def trained(steps: int) -> list[np.ndarray]:
        monkeypatch.setitem(engines.ENGINES, "tensorflow",
                            engines.ENGINES["tensorflow"].at_steps_per_call(steps))
        make_reproducible(3, True)
        model = build(arch, (32, 32, 1), labels.NUM_CLASSES, **extra)
        fit_model(model, fit_settings(epochs=3, batch_size=16), train=(images, classes),
                  val=(images[:48], classes[:48]), seed=3, cache=cache, verbose=0)
        if arch == "lenet5":  # compiled as the engine says (a VGG model: its head is)
            assert model.steps_per_execution == steps
        return model.get_weights()

    one, many = trained(1), trained(32)
    assert len(one) == len(many)
    for first, second in zip(one, many, strict=True):
        np.testing.assert_array_equal(first, second)


def test_the_steps_per_execution_benchmark_compares_what_it_says(capsys):
    from tests.conftest import benchmark_module

    module = benchmark_module("steps_per_execution")
    # it asserts each model's steps per call and plain TensorFlow kernels itself
    assert module.main(["--arch", "lenet5", "--images", "160", "--epochs", "2",
                        "--rounds", "1", "--steps", "4"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if "steps/call" in line]
    assert len(rows) == 2 and all(row.endswith("bit-identical") for row in rows), rows
    assert " 4 steps/call" in rows[1]


@pytest.mark.parametrize(("arch", "engine_name", "steps"), [
    ("lenet5", "tensorflow-before", 1), ("lenet5", "tensorflow", 32),
    ("rescnn", "tensorflow-before", 1)])  # rescnn: on-the-fly variants (a repeated stream)
def test_the_train_speed_benchmark_trains_each_engine_as_it_says(arch, engine_name, steps,
                                                                 monkeypatch):
    from tests.conftest import REPO, benchmark_module

    module = benchmark_module("train_speed")
    # the child adds the engine of before to the registry of its own process: here, for a test
    monkeypatch.setitem(ENGINES, module.BEFORE, module.before_engine())
    row = module.child(arch, engine_name, 96, 2, REPO / "params.yaml")
    assert (row["arch"], row["engine"], row["backend"]) == (arch, engine_name, "tensorflow")
    assert row["steps_per_execution"] == steps and row["images_per_second"] > 0


def test_the_engine_is_no_hyperparameter(tmp_path):
    values = repo_params()
    values["tune"]["lenet5"]["engine"] = ["jax", "tensorflow"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(ParamsError, match=r"tune\.lenet5\.engine: .*set train\.lenet5\.engine"):
        tune_settings(load_params(path).tune, "lenet5")


def test_the_default_engines_are_known():
    params = project_params()
    from handwriting.models.training import arch_settings

    for arch in params.train.architectures:
        assert arch_settings(params.train, arch)[0].engine in ENGINES


def test_array_batches_cover_every_image_once_per_epoch_in_a_seeded_order():
    from handwriting.models.fitting import array_batches, model_arrays

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 32, 32), dtype=np.uint8)
    images[:, 0, 0] = np.arange(10)  # each image's number, kept by the scaling
    classes = np.arange(10) % labels.NUM_CLASSES
    batches = array_batches(images, classes, 4, seed=3)
    epochs = [[next(batches) for _ in range(3)] for _ in range(2)]  # 4 + 4 + 2 a epoch
    for epoch in epochs:
        assert [len(x) for x, _ in epoch] == [4, 4, 2]
        x, y = (np.concatenate(parts) for parts in zip(*epoch))
        assert x.dtype == np.float32 and x.shape == (10, 32, 32, 1)
        numbers = np.round(x[:, 0, 0, 0] * 255).astype(int)
        assert sorted(numbers) == list(range(10))
        np.testing.assert_array_equal(y, model_arrays(images[numbers], classes[numbers])[1])
    orders = [np.round(np.concatenate([x for x, _ in e])[:, 0, 0, 0] * 255) for e in epochs]
    assert not np.array_equal(*orders)  # a new order each epoch ...
    again = array_batches(images, classes, 4, seed=3)
    np.testing.assert_array_equal(next(again)[0], epochs[0][0][0])  # ... the same in each run
    later = array_batches(images, classes, 4, seed=3, first_epoch=1)
    np.testing.assert_array_equal(next(later)[0], epochs[1][0][0])


def test_array_batches_vary_images_as_the_numbered_tf_data_batches_do():
    from handwriting.models.fitting import array_batches, fresh_variants

    images = np.zeros((6, 32, 32), np.uint8)
    images[:, 8:24, 14:18] = 255
    classes = np.zeros(6, int)
    batches = array_batches(images, classes, 3, seed=5, augment=(1.0, variant_ranges()),
                            first_epoch=2)
    x, _ = next(batches)  # batch number 2 epochs x 2 steps = 4
    expected = fresh_variants(images[np.random.default_rng([5, 2]).permutation(6)[:3]], 1.0,
                              variant_ranges(), 5, 4)
    np.testing.assert_array_equal(np.round(x[..., 0] * 255).astype(np.uint8), expected)
    assert not np.array_equal(expected, images[:3])


COMPILE_TWICE = """
import os, sys, time
from handwriting.models.engine import use_engine
use_engine("jax")
import jax, jax.numpy as jnp
print(jax.config.jax_compilation_cache_dir)
step = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
print(float(step(jnp.ones((64, 64)))))
"""


def run_fresh(code: str, env: dict[str, str]) -> list[str]:
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.split()


def test_jax_keeps_its_compiled_steps_in_the_cache_folder_and_off_switches_it_off(tmp_path):
    from handwriting.models.engine import JAX_CACHE_ENV

    folder = tmp_path / "jax"
    first = run_fresh(COMPILE_TWICE, {JAX_CACHE_ENV: str(folder)})
    assert first[0] == str(folder) and any(folder.iterdir())
    kept = sorted(p.name for p in folder.iterdir())
    again = run_fresh(COMPILE_TWICE, {JAX_CACHE_ENV: str(folder)})
    assert again == first  # loaded from the cache: the same result, nothing compiled anew
    assert sorted(p.name for p in folder.iterdir()) == kept
    off = run_fresh(COMPILE_TWICE, {JAX_CACHE_ENV: "off"})
    assert off[0] == "None" and off[1] == first[1]


def test_the_cache_folders_follow_the_environment(tmp_path, monkeypatch):
    from handwriting.models.engine import user_cache_folder

    monkeypatch.setenv("SOME_CACHE", str(tmp_path / "here"))
    assert user_cache_folder("SOME_CACHE", "things") == tmp_path / "here"
    monkeypatch.setenv("SOME_CACHE", "Off")
    assert user_cache_folder("SOME_CACHE", "things") is None
    monkeypatch.delenv("SOME_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_folder("SOME_CACHE", "things") == tmp_path / "xdg" / "handwriting" / "things"


def test_the_fit_engines_benchmark_times_the_pipelines_whole_fit(tiny_split):
    from tests.conftest import REPO, benchmark_module

    module = benchmark_module("fit_engines")
    row = module.child("lenet5", "tensorflow", tiny_split, REPO / "params.yaml")
    epochs = project_params().train.sections["lenet5"]["epochs"]
    assert (row["arch"], row["engine"], row["epochs"]) == ("lenet5", "tensorflow", epochs)
    assert row["train_images"] == 156 and row["seconds"] > 0 and 0 <= row["val_accuracy"] <= 1
    assert module.run_order(["jax", "tensorflow"], 3) == [
        "jax", "tensorflow", "tensorflow", "jax", "jax", "tensorflow"]


def test_the_fit_engines_benchmark_names_the_missing_split(tmp_path, capsys):
    from tests.conftest import benchmark_module

    with pytest.raises(SystemExit):
        benchmark_module("fit_engines").main(["--split", str(tmp_path / "nowhere")])
    assert "dvc repro split" in capsys.readouterr().err

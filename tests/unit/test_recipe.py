"""The training recipe every architecture can use (``train.defaults`` / ``train.<arch>``): typed
fit settings, label smoothing, the cosine schedule with warm-up, and on-the-fly variants that
are the same for the same seed."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from handwriting import labels
from handwriting.models.fitting import (
    FIT_KEYS,
    FitSettings,
    compile_model,
    fit_model,
    fresh_variants,
    learning_rate_schedule,
    make_dataset,
)
from handwriting.models.training import arch_settings
from handwriting.params import ParamsError, load_params
from tests.conftest import fit_settings, repo_params, variant_ranges

RANGES = variant_ranges()


def letters(count: int, seed: int = 0) -> np.ndarray:
    """Bars at random places: images with ink for the augmentation to move."""
    rng = np.random.default_rng(seed)
    out = np.zeros((count, 32, 32), np.uint8)
    for image in out:
        top, left = rng.integers(4, 16, size=2)
        image[top:top + 12, left:left + 3] = 255
    return out


# --- settings ------------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "named"), [
    ({"optimizer": "adamw"}, "optimizer must be one of adam, sgd, rmsprop"),
    ({"lr_schedule": "cosin"}, "lr_schedule must be one of constant, cosine"),
    ({"label_smoothing": 1.0}, "label_smoothing must be a number from 0 up to"),
    ({"augment_on_the_fly": 1.5}, "augment_on_the_fly must be a number from 0 to 1"),
    ({"epochs": 0}, "epochs must be at least 1"),
    ({"batch_size": 2.5}, "batch_size must be a whole number"),
    ({"learning_rate": True}, "learning_rate must be a number above 0"),
])
def test_bad_fit_settings_name_the_key_and_the_valid_values(change, named):
    with pytest.raises(ParamsError, match=named):
        fit_settings(**change)


def _params_with(tmp_path, edit):
    values = repo_params()
    edit(values["train"])
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(values))
    return load_params(path)


def test_an_architecture_takes_the_defaults_and_overrides_them(tmp_path):
    def edit(train):
        train["defaults"]["label_smoothing"] = 0.05
        train["lenet5"]["label_smoothing"] = 0.2

    params = _params_with(tmp_path, edit)
    lenet5, hparams = arch_settings(params.train, "lenet5")
    gru, _ = arch_settings(params.train, "gru")
    assert lenet5.label_smoothing == 0.2 and gru.label_smoothing == 0.05
    assert set(hparams) == {"dropout"}  # fit keys never reach the builder
    assert tuple(vars(lenet5)) == FIT_KEYS


def test_a_typo_in_an_architecture_s_recipe_is_named(tmp_path):
    params = _params_with(tmp_path, lambda train: train["gru"].update(lr_schedule="cosin"))
    with pytest.raises(ParamsError, match=r"train\.gru\.lr_schedule must be one of"):
        arch_settings(params.train, "gru")


def test_a_missing_default_is_named(tmp_path):
    params = _params_with(tmp_path, lambda train: train["defaults"].pop("label_smoothing"))
    with pytest.raises(ParamsError, match=r"missing key 'train\.lstm\.label_smoothing'; set it "
                                          "in train.defaults"):
        arch_settings(params.train, "lstm")


def test_train_defaults_hold_only_fit_settings(tmp_path):
    params = _params_with(tmp_path, lambda train: train["defaults"].update(units=64))
    with pytest.raises(ParamsError, match="train.defaults may only hold fit settings"):
        arch_settings(params.train, "lenet5")


# --- schedule and loss ---------------------------------------------------------------------

def test_the_cosine_schedule_warms_up_then_decays_to_zero():
    fit = fit_settings(epochs=5, learning_rate=0.01, lr_schedule="cosine", warmup_epochs=1)
    schedule = learning_rate_schedule(fit, steps_per_epoch=10)
    rates = np.array([float(schedule(step)) for step in range(51)])
    assert rates[0] == 0.0
    np.testing.assert_allclose(rates[10], 0.01, rtol=1e-6)  # the peak after one epoch
    assert np.all(np.diff(rates[:11]) > 0)  # linear warm-up ...
    assert np.all(np.diff(rates[10:]) < 0)  # ... then a steady decay
    np.testing.assert_allclose(rates[50], 0.0, atol=1e-9)
    np.testing.assert_allclose(rates[30], 0.005, rtol=1e-5)  # half-way: half the rate


def test_the_constant_schedule_is_the_plain_rate():
    assert learning_rate_schedule(fit_settings(learning_rate=0.003), 10) == 0.003


def test_the_constant_schedule_can_warm_up_first():
    fit = fit_settings(epochs=4, learning_rate=0.003, lr_schedule="constant", warmup_epochs=1)
    schedule = learning_rate_schedule(fit, steps_per_epoch=10)
    rates = np.array([float(schedule(step)) for step in range(41)])
    assert rates[0] == 0.0 and np.all(np.diff(rates[:11]) > 0)
    np.testing.assert_allclose(rates[10:], 0.003, rtol=1e-6)


def test_label_smoothing_reaches_the_loss():
    from handwriting.models.zoo import build

    model = build("lenet5", (32, 32, 1), labels.NUM_CLASSES)
    compile_model(model, "adam", 1e-3, label_smoothing=0.1)
    targets = np.eye(labels.NUM_CLASSES, dtype=np.float32)[:1]
    confident = np.full((1, labels.NUM_CLASSES), 1e-6, np.float32)
    confident[0, 0] = 1.0
    # A certain, right answer costs nothing without smoothing and something with it.
    assert float(model.loss(targets, confident)) > 0.3


# --- on-the-fly variants -------------------------------------------------------------------

def test_fresh_variants_depend_only_on_seed_and_batch_number():
    batch = letters(16)
    first = fresh_variants(batch, 1.0, RANGES, seed=3, batch_number=5)
    np.testing.assert_array_equal(first, fresh_variants(batch, 1.0, RANGES, 3, 5))
    assert not np.array_equal(first, fresh_variants(batch, 1.0, RANGES, 3, 6))
    assert not np.array_equal(first, fresh_variants(batch, 1.0, RANGES, 4, 5))
    assert first.dtype == np.uint8 and first.shape == batch.shape
    np.testing.assert_array_equal(fresh_variants(batch, 0.0, RANGES, 3, 5), batch)
    changed = [not np.array_equal(a, b) for a, b in zip(first, batch)]
    assert sum(changed) >= 14  # share 1: (nearly) every image is a new variant


def test_the_share_is_the_expected_share_of_images():
    batch = letters(400)
    varied = fresh_variants(batch, 0.25, RANGES, seed=1, batch_number=0)
    share = np.mean([not np.array_equal(a, b) for a, b in zip(varied, batch)])
    assert 0.18 < share < 0.32


def _batches(seed: int, count: int) -> list[np.ndarray]:
    images, class_ids = letters(40), np.arange(40) % labels.NUM_CLASSES
    dataset = make_dataset(images, class_ids, 16, shuffle=True, seed=seed,
                           augment=(0.5, RANGES))
    return [x.numpy() for x, _ in dataset.take(count)]


def test_the_same_seed_gives_the_same_batches_and_every_epoch_new_ones():
    # 40 images in batches of 16: an epoch is 3 batches; 9 batches span 3 epochs.
    first, second = _batches(seed=11, count=9), _batches(seed=11, count=9)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(first, _batches(seed=12, count=9)))
    assert first[0].shape == (16, 32, 32, 1) and first[0].max() <= 1.0
    # The stream goes on over epoch boundaries with fresh variants: no batch repeats.
    assert len({batch.tobytes() for batch in first}) == 9


@pytest.mark.slow
def test_on_the_fly_training_runs_the_planned_steps():
    from handwriting.models.zoo import build

    model = build("rescnn", (32, 32, 1), labels.NUM_CLASSES, width=4)
    images, class_ids = letters(70), np.arange(70) % labels.NUM_CLASSES
    fit = fit_settings(epochs=2, augment_on_the_fly=0.5, lr_schedule="cosine", warmup_epochs=1,
                       label_smoothing=0.1)
    history = fit_model(model, fit, train=(images, class_ids), val=(images[:20], class_ids[:20]),
                        seed=1, augmentation=RANGES, verbose=0)
    assert len(history["loss"]) == 2 and np.all(np.isfinite(history["loss"]))
    assert int(model.optimizer.iterations.numpy()) == 2 * 3  # ceil(70 / 32) steps per epoch


def test_on_the_fly_training_needs_the_ranges():
    from handwriting.models.zoo import build

    model = build("lenet5", (32, 32, 1), labels.NUM_CLASSES)
    images, class_ids = letters(8), np.arange(8)
    with pytest.raises(ValueError, match="needs the augmentation ranges"):
        fit_model(model, fit_settings(augment_on_the_fly=0.5), train=(images, class_ids),
                  val=(images, class_ids), seed=1, verbose=0)


def test_a_frozen_vgg_base_refuses_on_the_fly_variants():
    from handwriting.models.zoo import build

    model = build("vgg16", (32, 32, 1), labels.NUM_CLASSES, weights=None)
    images, class_ids = letters(8), np.arange(8)
    with pytest.raises(ParamsError, match=r"train\.vgg16\.augment_on_the_fly: 0"):
        fit_model(model, fit_settings(augment_on_the_fly=0.5), train=(images, class_ids),
                  val=(images, class_ids), seed=1, augmentation=RANGES, verbose=0)


def test_fit_settings_are_frozen_and_replace_validates():
    fit = fit_settings()
    with pytest.raises(AttributeError):
        fit.epochs = 3  # type: ignore[misc]
    assert fit.replace(epochs=3).epochs == 3
    with pytest.raises(ParamsError):
        fit.replace(optimizer="lion")
    assert isinstance(fit, FitSettings)


def test_a_written_history_reads_back_in_keras_shape(tmp_path):
    from handwriting.models.history import read_history, write_history

    history = {"accuracy": [0.5, 0.75], "loss": [1.25, 0.5], "val_accuracy": [0.25, 0.5],
               "val_loss": [2.0, 1.5]}
    rows = write_history(tmp_path / "h.csv", history)
    assert [row["epoch"] for row in rows] == [1, 2]
    assert read_history(tmp_path / "h.csv") == history
    (tmp_path / "empty.csv").write_text("epoch,accuracy,loss,val_accuracy,val_loss\n")
    with pytest.raises(ValueError, match=r"empty\.csv has no epochs"):
        read_history(tmp_path / "empty.csv")

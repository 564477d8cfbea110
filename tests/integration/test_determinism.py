"""Training is reproducible to the bit: two separate processes, the same seed and data, the
same weights (``base.deterministic``, :func:`handwriting.models.fitting.make_reproducible`),
also with the full training recipe (label smoothing, cosine schedule with warm-up, on-the-fly
variants)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO, project_params, repo_params

# Trainings in processes of their own: over 5 s each (`pytest -m "not slow"` leaves them out).
pytestmark = pytest.mark.slow

# Trains a LeNet-5 and a GRU (the convolution and recurrent kernels whose multi-threaded
# reductions vary from run to run without op determinism) on seeded random letters through
# the train stage's own fit routine, with several threads, and prints a hash of the weights;
# then a tiny rescnn with the whole recipe.
TRAIN_AND_HASH = """
import hashlib, sys
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(2)
from handwriting import labels
from handwriting.models.fitting import fit_model, make_reproducible
from handwriting.models.zoo import build
from tests.conftest import fit_settings, variant_ranges

deterministic = sys.argv[1] == "on"
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (384, 32, 32), dtype=np.uint8)
classes = rng.integers(0, labels.NUM_CLASSES, 384)
digest = hashlib.sha256()
recipe = fit_settings(label_smoothing=0.1, lr_schedule="cosine", warmup_epochs=1,
                      augment_on_the_fly=0.5)
for arch, hparams, fit in (("lenet5", {}, fit_settings()), ("gru", {"units": 16}, fit_settings()),
                           ("rescnn", {"width": 4}, recipe)):
    make_reproducible(7, deterministic)
    model = build(arch, (32, 32, 1), labels.NUM_CLASSES, **hparams)
    fit_model(model, fit, train=(images[:320], classes[:320]),
              val=(images[320:], classes[320:]), seed=7, augmentation=variant_ranges(),
              verbose=0)
    for weights in model.get_weights():
        digest.update(np.ascontiguousarray(weights).tobytes())
from tensorflow.python.framework import config as tf_config  # the only reader there is

print("op_determinism", tf_config.is_op_determinism_enabled())
print("weights", digest.hexdigest())
"""


def _train_in_new_process(mode: str) -> dict[str, str]:
    done = subprocess.run([sys.executable, "-c", TRAIN_AND_HASH, mode], capture_output=True,
                          text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(line.split(" ", 1) for line in done.stdout.splitlines()
                if line.startswith(("weights", "op_determinism")))


def test_two_processes_train_bit_identical_weights():
    first, second = _train_in_new_process("on"), _train_in_new_process("on")
    assert first["op_determinism"] == "True"
    assert first["weights"] == second["weights"]


# The switch alone, without training: what make_reproducible leaves TensorFlow set to.
SWITCH = """
import sys
from handwriting.models.fitting import make_reproducible
make_reproducible(7, sys.argv[1] == "on")
from tensorflow.python.framework import config as tf_config
print("op_determinism", tf_config.is_op_determinism_enabled())
"""


def test_the_switch_is_honoured():
    done = subprocess.run([sys.executable, "-c", SWITCH, "off"], capture_output=True, text=True,
                          timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "op_determinism False" in done.stdout.splitlines()


def test_the_pipeline_trains_deterministically_by_default_and_checks_the_key(tmp_path):
    import yaml

    from handwriting.params import ParamsError, load_params

    assert project_params().base.deterministic is True
    values = repo_params()
    values["base"]["deterministic"] = "yes"
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(values))
    with pytest.raises(ParamsError, match=r"'base\.deterministic' must be true or false"):
        load_params(bad)

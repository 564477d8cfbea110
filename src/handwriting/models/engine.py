"""The engine a model trains on: Keras 3 on TensorFlow (plain or XLA-compiled) or on JAX.

The builders are backend-neutral Keras 3, so the same model trains on any of them; the fit
setting ``engine`` (``train.defaults`` or ``train.<arch>`` in params.yaml) chooses one, and
``benchmarks/train_speed.py`` measures them side by side. Whatever trains it, a model is saved
as ``.keras``, which every backend loads, and evaluation, serving and the ONNX export run on
TensorFlow.

Keras fixes its backend when it is first imported, so a process trains on one backend:
:func:`use_engine` selects it before that (the train and tune stages call it first thing), and
refuses, naming the fix, when Keras already runs on another one.

On JAX, every new model (every tuning trial) compiles its train and test steps with XLA, which
costs more than a short trial's training. :func:`use_engine` therefore switches on JAX's
persistent compilation cache in :func:`user_cache_folder` (``$HANDWRITING_JAX_CACHE``, else
``~/.cache/handwriting/jax``; ``off`` switches it off): a step compiled once, in any process,
is loaded, not compiled again. The cache holds compiled code only, keyed by the computation,
so it changes the speed, never a result. Safe to delete at any time.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from handwriting.params import ParamsError

JAX_CACHE_ENV = "HANDWRITING_JAX_CACHE"
OFF = ("off", "0", "false", "no", "none")


@dataclass(frozen=True)
class Engine:
    """A Keras backend, whether its train step is XLA-compiled (``jit_compile``), and how many
    train steps one call into the compiled function runs (``steps_per_execution``).

    TensorFlow pays a fixed cost per call (Python, the function call, the callbacks), which
    a small model's step (the VGG models' heads) does not outweigh; with several steps per
    call it runs them in a loop inside the graph: the same steps on the same batches, the
    same weights bit for bit, only the batch-level callbacks see every n-th step
    (:func:`handwriting.models.fitting.steps_per_call` says where it applies). Keras's JAX
    trainer runs its steps in a Python loop whatever the setting (no gain measured), so 1.
    """

    name: str
    backend: str
    jit_compile: bool
    steps_per_execution: int = 1

    def at_steps_per_call(self, steps: int, name: str | None = None) -> Engine:
        """This engine running ``steps`` train steps per call (renamed ``name``, if given):
        what the benchmarks compare with the chosen steps per execution."""
        return dataclasses.replace(self, steps_per_execution=steps, name=name or self.name)


# benchmarks/steps_per_execution.py measures the steps per execution side by side
TENSORFLOW_STEPS_PER_EXECUTION = 32

ENGINES = {
    engine.name: engine for engine in (
        Engine("tensorflow", "tensorflow", jit_compile=False,  # TensorFlow's own kernels
               steps_per_execution=TENSORFLOW_STEPS_PER_EXECUTION),
        Engine("tensorflow-xla", "tensorflow", jit_compile=True,
               steps_per_execution=TENSORFLOW_STEPS_PER_EXECUTION),
        Engine("jax", "jax", jit_compile=True),  # JAX always compiles the step with XLA
    )
}


class EngineError(ParamsError):
    """The engine cannot run in this process (Keras already runs on another backend)."""


def engine(name: str) -> Engine:
    """The engine called ``name``; a ParamsError names the choices."""
    if name not in ENGINES:
        raise ParamsError(f"engine must be one of {', '.join(ENGINES)}, got {name!r}")
    return ENGINES[name]


def running_backend() -> str | None:
    """The backend Keras runs on in this process, or None before Keras is imported."""
    keras = sys.modules.get("keras")
    return keras.backend.backend() if keras is not None else None


def use_engine(name: str) -> Engine:
    """Make Keras in this process run on ``name``'s backend; call it before Keras is imported
    (later it only checks). Raises :class:`EngineError` when Keras already runs on another
    backend: a process trains on one backend."""
    chosen = engine(name)
    current = running_backend()
    if current is None:
        os.environ["KERAS_BACKEND"] = chosen.backend
        if chosen.backend == "jax":
            _compilation_cache()
    elif current != chosen.backend:
        raise EngineError(
            f"engine {name} trains on Keras's {chosen.backend} backend, but Keras already runs "
            f"on {current} in this process; run the stage in a new process (`python -m "
            f"handwriting.stages.train ...`, or `dvc repro`), or set the engine to one on "
            f"{current} in params.yaml (train.defaults.engine or train.<arch>.engine)")
    return chosen


def user_cache_folder(env_var: str, name: str) -> Path | None:
    """A cache folder: ``$<env_var>`` when set, else ``$XDG_CACHE_HOME/handwriting/<name>``
    (``~/.cache/handwriting/<name>``); None when ``$<env_var>`` is ``off`` or there is no home
    folder (a warning names the variable)."""
    value = os.environ.get(env_var, "").strip()
    if value.lower() in OFF:
        return None
    if value:
        return Path(value).expanduser()
    root = os.environ.get("XDG_CACHE_HOME", "").strip()
    if not root:
        try:
            root = str(Path.home() / ".cache")
        except RuntimeError:  # no HOME and no passwd entry (a container's anonymous user)
            print(f"warning: no home folder for the {name} cache; set {env_var} to a folder "
                  "(nothing is kept between processes)", file=sys.stderr, flush=True)
            return None
    return Path(root) / "handwriting" / name


def _compilation_cache() -> None:
    """Keep every XLA compilation of this process in the persistent cache (see the module's
    description), whatever its size or compile time."""
    folder = user_cache_folder(JAX_CACHE_ENV, "jax")
    if folder is None:
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)

"""The engine a model trains on: Keras 3 on TensorFlow (plain or XLA-compiled) or on JAX.

The builders are backend-neutral Keras 3, so the same model trains on any of them; the fit
setting ``engine`` (``train.defaults`` or ``train.<arch>`` in params.yaml) chooses one, and
``benchmarks/train_speed.py`` measures them side by side. Whatever trains it, a model is saved
as ``.keras``, which every backend loads, and evaluation, serving and the ONNX export run on
TensorFlow.

Keras fixes its backend when it is first imported, so a process trains on one backend:
:func:`use_engine` selects it before that (the train and tune stages call it first thing), and
refuses, naming the fix, when Keras already runs on another one.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

from handwriting.params import ParamsError


@dataclass(frozen=True)
class Engine:
    """A Keras backend and whether its train step is XLA-compiled (``jit_compile``)."""

    name: str
    backend: str
    jit_compile: bool


ENGINES = {
    engine.name: engine for engine in (
        Engine("tensorflow", "tensorflow", jit_compile=False),  # TensorFlow's own kernels
        Engine("tensorflow-xla", "tensorflow", jit_compile=True),
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
    elif current != chosen.backend:
        raise EngineError(
            f"engine {name} trains on Keras's {chosen.backend} backend, but Keras already runs "
            f"on {current} in this process; run the stage in a new process (`python -m "
            f"handwriting.stages.train ...`, or `dvc repro`), or set the engine to one on "
            f"{current} in params.yaml (train.defaults.engine or train.<arch>.engine)")
    return chosen

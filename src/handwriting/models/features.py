"""The features of a frozen VGG-16 base, computed once per split and kept between stages: the
VGG models then train only their head, on cached features."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from handwriting.models.engine import user_cache_folder


def frozen_feature_split(model):
    """(feature extractor, head) when the model starts with a frozen VGG-16 base, else None.

    The head shares its layers with ``model``: training the head trains the model.
    """
    import keras

    from handwriting.models.zoo import find_vgg_base

    base = find_vgg_base(model)
    if base is None or base.trainable:
        return None
    # Functional models list layers in graph order, and the VGG models are a chain after the
    # base: the next layer consumes the base's features.
    after_base = model.layers[model.layers.index(base) + 1]
    features = keras.Model(model.inputs, after_base.input, name=f"{model.name}_features")
    head = keras.Model(after_base.input, model.outputs, name=f"{model.name}_head")
    return features, head


FEATURE_CACHE_ENV = "HANDWRITING_FEATURE_CACHE"
# Part of every cache key: bump it when make_dataset's scaling of the images changes (the one
# input of the features the extractor's own layers and weights do not describe).
FEATURE_CACHE_VERSION = 1


def feature_cache_folder() -> Path | None:
    """Where frozen-base features are kept between stages: ``$HANDWRITING_FEATURE_CACHE``, else
    ``$XDG_CACHE_HOME/handwriting/features`` (``~/.cache/handwriting/features``); ``off``
    keeps them in memory only. Safe to delete at any time."""
    return user_cache_folder(FEATURE_CACHE_ENV, "features")


def _leaf_layers(model) -> Iterator:
    for layer in model.layers:
        if getattr(layer, "layers", None):  # a nested model, such as the VGG-16 base
            yield from _leaf_layers(layer)
        else:
            yield layer


def features_key(features_model, images: np.ndarray) -> str:
    """A digest of everything the features depend on: the libraries, the dtype policy, the
    extractor's layers (class and configuration, not their names: ``vgg16`` and ``vgg16_gru``
    share one base, and Keras numbers unnamed layers per process) and weights, and the
    images."""
    import keras
    import tensorflow as tf

    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"v{FEATURE_CACHE_VERSION} keras {keras.__version__} tf {tf.__version__} "
                  f"{keras.backend.backend()} {keras.config.dtype_policy().name} "
                  f"{images.shape} {images.dtype}".encode())
    for layer in _leaf_layers(features_model):
        config = {key: value for key, value in layer.get_config().items() if key != "name"}
        digest.update(type(layer).__name__.encode())
        digest.update(json.dumps(config, sort_keys=True, default=str).encode())
    for weights in features_model.get_weights():
        digest.update(f"{weights.shape}{weights.dtype}".encode())
        digest.update(np.ascontiguousarray(weights).tobytes())
    digest.update(np.ascontiguousarray(images).tobytes())
    return digest.hexdigest()


@dataclass
class FeatureCache:
    """Frozen-base features computed once per base and image set and shared by every model
    fitted with this cache. The first model's base weights are copied into each later model,
    so the cached features are its own.

    With a ``folder`` (default :func:`feature_cache_folder`) the features also persist on disk
    under a digest of the base's weights and the images, so that ``train@vgg16``,
    ``train@vgg16_gru`` and their ``tune@`` searches compute them once between them: a file is
    only ever read back for the very same base and images, and an unreadable one is computed
    again and replaced."""

    folder: Path | None = field(default_factory=feature_cache_folder)
    base_weights: list | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)

    def get(self, features_model, images: np.ndarray, seed: int) -> np.ndarray:
        """The base's features of ``images``: from memory, from the folder, or computed."""
        key = features_key(features_model, images)
        if key not in self.features:
            shape = (len(images), *features_model.output.shape[1:])
            found = self._read(key, shape)
            if found is None:
                # the one input pipeline (fitting imports this module, so not at the top)
                from handwriting.models.fitting import make_dataset

                print(f"computing frozen VGG-16 features once for {len(images)} images",
                      flush=True)
                inputs = make_dataset(images, np.zeros(len(images), np.int64), 128,
                                      shuffle=False, seed=seed)
                found = features_model.predict(inputs.map(lambda x, y: x), verbose=0)
                self._write(key, found)
            self.features[key] = found
        return self.features[key]

    def _read(self, key: str, shape: tuple) -> np.ndarray | None:
        if self.folder is None:
            return None
        path = self.folder / f"{key}.npy"
        try:
            if not path.is_file():
                return None
            found = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as error:
            print(f"warning: {path} is unreadable ({error}); computing the features again",
                  file=sys.stderr, flush=True)
            return None
        if found.shape != shape or found.dtype != np.float32:
            print(f"warning: {path} holds {found.dtype} {found.shape}, not float32 {shape}; "
                  "computing the features again", file=sys.stderr, flush=True)
            return None
        print(f"frozen VGG-16 features for {shape[0]} images from {path}", flush=True)
        return found

    def _write(self, key: str, found: np.ndarray) -> None:
        if self.folder is None:
            return
        path, partial = self.folder / f"{key}.npy", None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=self.folder, suffix=".tmp",
                                             delete=False) as handle:
                partial = Path(handle.name)
                np.save(handle, found, allow_pickle=False)
            os.replace(partial, path)  # atomic: a reader sees all of it or nothing
        except OSError as error:
            if partial is not None:
                partial.unlink(missing_ok=True)
            print(f"warning: could not keep the features in {self.folder} ({error}); set "
                  f"{FEATURE_CACHE_ENV} to a writable folder or to off", file=sys.stderr,
                  flush=True)

"""Model architectures: Keras 3 builders for the 52-class letter recogniser (see :mod:`.zoo`).

``from handwriting.models import build`` works as usual, but the zoo (and with it Keras and
TensorFlow, a few seconds) is imported only when one of its names is first used, so importing
another module of this package, such as ``handwriting.models.fitting``, stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time see __getattr__
    from handwriting.models.zoo import (
        ARCHITECTURES,
        build,
        build_gru,
        build_lenet5,
        build_lenet5_gru,
        build_lstm,
        build_rescnn,
        build_vgg16,
        build_vgg16_gru,
        build_with_info,
        default_hparams,
        is_pretrained,
        unfreeze_top_vgg_blocks,
        vgg16_base,
    )

__all__ = [
    "ARCHITECTURES",
    "build",
    "build_gru",
    "build_lenet5",
    "build_lenet5_gru",
    "build_lstm",
    "build_rescnn",
    "build_vgg16",
    "build_vgg16_gru",
    "build_with_info",
    "default_hparams",
    "is_pretrained",
    "unfreeze_top_vgg_blocks",
    "vgg16_base",
]


def __getattr__(name: str) -> Any:
    """Import the zoo on first use of one of its public names (PEP 562)."""
    if name in __all__:
        return getattr(importlib.import_module("handwriting.models.zoo"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

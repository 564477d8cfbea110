"""Which trained model: an architecture and a variant, with one string form and one parser.

``ModelRef("lenet5", "tuned")`` is written ``lenet5-tuned`` everywhere: file names of the
per-model reports, MLflow run names, metrics keys, the app's model names and the
``--model`` names of the command line. The soft-vote ensemble is not a ModelRef: it is named
``ensemble`` (:data:`handwriting.evaluation.champion.ENSEMBLE`). Importing this module is cheap
(no TensorFlow).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

VARIANTS = ("untuned", "tuned")


@dataclass(frozen=True)
class ModelRef:
    """A model of the pipeline: ``models/<arch>/<variant>.keras``."""

    arch: str
    variant: str

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"model variant must be one of {', '.join(VARIANTS)}; got "
                             f"{self.variant!r}")
        if not self.arch or "/" in self.arch:
            raise ValueError(f"not an architecture name: {self.arch!r}")

    def __str__(self) -> str:
        return f"{self.arch}-{self.variant}"

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        """``"<arch>-<variant>"`` (such as ``lenet5_gru-tuned``) as a ModelRef; raises
        ValueError naming the expected form."""
        arch, dash, variant = text.rpartition("-")
        if not dash or not arch or variant not in VARIANTS:
            raise ValueError(f"{text!r} is not a model name; expected <arch>-<variant> with "
                             f"variant {' or '.join(VARIANTS)}, such as lenet5-tuned")
        return cls(arch, variant)

    @classmethod
    def tuned(cls, arch: str) -> ModelRef:
        """The tuned model of ``arch``."""
        return cls(arch, "tuned")

    def path(self, models_dir: Path) -> Path:
        """Its Keras file under ``models_dir``."""
        return Path(models_dir) / self.arch / f"{self.variant}.keras"


def tuned_names(architectures: list[str] | tuple[str, ...]) -> list[str]:
    """``<arch>-tuned`` of every architecture, in order: the ensemble's members and the
    champion's candidates besides the ensemble."""
    return [str(ModelRef.tuned(arch)) for arch in architectures]

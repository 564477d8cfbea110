"""Where the app finds its files: set by ``handwriting app`` through environment variables.

Streamlit runs the page scripts in its own process, so the command line hands the folders over
in the environment; a variable that is not set falls back to the repository layout relative to
the working directory (``models``, ``data/feedback``, ``metrics``, ``plots``, ``params.yaml``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENV_MODELS = "HANDWRITING_MODELS_DIR"
ENV_FEEDBACK = "HANDWRITING_FEEDBACK_DIR"
ENV_METRICS = "HANDWRITING_METRICS_DIR"
ENV_PLOTS = "HANDWRITING_PLOTS_DIR"
ENV_PARAMS = "HANDWRITING_PARAMS"

# The upload limit: a photo of one letter is well under 1 MB; 5 MB leaves room for a
# high-resolution scan and keeps decoding in the app fast.
MAX_UPLOAD_MB = 5
UPLOAD_TYPES = ("png", "jpg", "jpeg")


@dataclass(frozen=True)
class AppConfig:
    """The folders and files the app reads (and, for feedback, writes)."""

    models_dir: Path = Path("models")
    feedback_dir: Path = Path("data/feedback")
    metrics_dir: Path = Path("metrics")
    plots_dir: Path = Path("plots")
    params: Path = Path("params.yaml")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AppConfig:
        """The configuration from the ``HANDWRITING_*`` variables, defaults where unset."""
        environ = os.environ if environ is None else environ
        defaults = cls()

        def pick(name: str, default: Path) -> Path:
            value = environ.get(name, "").strip()
            return Path(value) if value else default

        return cls(models_dir=pick(ENV_MODELS, defaults.models_dir),
                   feedback_dir=pick(ENV_FEEDBACK, defaults.feedback_dir),
                   metrics_dir=pick(ENV_METRICS, defaults.metrics_dir),
                   plots_dir=pick(ENV_PLOTS, defaults.plots_dir),
                   params=pick(ENV_PARAMS, defaults.params))

    def to_env(self) -> dict[str, str]:
        """The variables that make :meth:`from_env` return this configuration (absolute
        paths, so the app does not depend on Streamlit's working directory)."""
        return {ENV_MODELS: str(self.models_dir.resolve()),
                ENV_FEEDBACK: str(self.feedback_dir.resolve()),
                ENV_METRICS: str(self.metrics_dir.resolve()),
                ENV_PLOTS: str(self.plots_dir.resolve()),
                ENV_PARAMS: str(self.params.resolve())}

"""The web app (``handwriting app``): classify drawn or uploaded letters, compare the models,
and save corrections for the feedback loop.

Built with Streamlit. :data:`MAIN_SCRIPT` is the entry point that ``streamlit run`` executes;
it routes to the page scripts in ``views/`` (Home, Classify, Models, About). The logic the pages
use lives in plain modules that import neither Streamlit nor TensorFlow at import time:

* :mod:`handwriting.app.config`: where the app finds models, metrics, plots and the feedback
  folder (environment variables that ``handwriting app`` sets);
* :mod:`handwriting.app.catalog`: the models found on disk (untuned, tuned, the ensemble, the
  champion) and the champion's report;
* :mod:`handwriting.app.inference`: predictions through :class:`~handwriting.serving.Predictor`
  and the ensemble's vote;
* :mod:`handwriting.app.features`: feature maps of the first convolutions and the Grad-CAM
  overlay;
* :mod:`handwriting.app.reports`: the evaluation results (metrics, training curves, confusion
  matrices) for the Models page;
* :mod:`handwriting.app.ui`: the Streamlit helpers shared by the pages (cached model loading).
"""

from pathlib import Path

MAIN_SCRIPT = Path(__file__).with_name("main.py")

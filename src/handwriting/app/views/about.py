"""About: the project, the pipeline, the feedback loop and the license."""

import streamlit as st

from handwriting import __version__
from handwriting.app import ui

app = ui.config()
st.title("About")
st.markdown(f"""
**handwriting** {__version__} recognises one handwritten English letter in an image: 52
classes, `A`-`Z` and `a`-`z`. It is a reproducible [DVC](https://dvc.org) pipeline of small
Python stages with every setting in `params.yaml`, and every training run is tracked in
[MLflow](https://mlflow.org).

### The pipeline

`feedback_inbox` → `raw` (a handwriting generator built on the Hershey fonts, or your own
folder of letters, plus the saved corrections) → `balance` → `augment` → `split` (by source
image, so no augmented copy of a test image is trained on) → `train` and `tune` for the seed
study's six architectures (LeNet-5, VGG-16, LSTM, GRU, LeNet-5 + GRU, VGG-16 + GRU) and our
compact residual CNN (`tune` is a successive-halving search that starts from the untuned
settings, so the tuned model is never worse on validation) → `evaluate` (every untuned and
tuned model and their ensemble on the held-out test split, with the tuning gain of each) → the
champion exported to ONNX.
`dvc repro` runs whatever is out of date.

Every image, wherever it comes from (the generator, a folder, an upload or this app's canvas),
passes through **one** preprocessing function: decoded to grayscale, polarity normalised,
cropped to the ink with a margin, padded to a square and resized. The Classify page shows the
result as "model input".

### The feedback loop

1. On the Classify page a model gets a letter wrong.
2. You pick the right letter under "Wrong? pick the right letter" and save.
3. The image is checked with the shared preprocessing and saved as a grayscale PNG in
   `{app.feedback_dir}/upper/<A-Z>/` or `{app.feedback_dir}/lower/<a-z>/`, named after its
   content, so saving it twice stores it once.
4. The next `dvc repro` sees the changed folder, adds the corrections to the data and retrains
   the models that depend on it.

### License

MIT. The stroke skeletons of the generated letters come from the Hershey fonts via the
MIT-licensed `Hershey-Fonts` package.
""")

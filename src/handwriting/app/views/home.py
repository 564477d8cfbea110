"""Home: what the app does, the models found, the champion and the waiting corrections."""

import streamlit as st

from handwriting.app import ui
from handwriting.app.catalog import champion_report
from handwriting.feedback import count_corrections

app = ui.config()

st.title("Handwritten letter recognition")
st.markdown(
    "Draw a letter or upload a picture of one, and the models trained by this project's "
    "pipeline say which of the **52 classes** (A-Z and a-z) it is, how sure they are, "
    "and where they looked. When a model is wrong, tell it the right letter: the correction is "
    "saved and the next `dvc repro` trains on it.")

st.page_link("views/classify.py", label="Classify a letter", icon=":material/draw:")
st.page_link("views/models.py", label="Compare the models", icon=":material/leaderboard:")

st.header("Models")
choices, problem = ui.models(app)
if not choices:
    ui.need_repro(f"No trained models were found in `{app.models_dir}`.")
    st.markdown("`dvc repro` builds the data, trains the six architectures (untuned and tuned), "
                "evaluates them and exports the champion; on a 2-core CPU it takes about half "
                "an hour. Then reload this page.")
else:
    st.write(f"{len(choices)} models found in `{app.models_dir}`:")
    st.dataframe(
        [{"model": choice.name, "kind": choice.kind,
          "source": str(choice.path) if choice.path else
          f"{choice.vote} vote of {len(choice.members)} tuned models; weights: "
          f"{choice.weights_from}"}
         for choice in choices],
        hide_index=True)
    if problem:
        st.caption(f"No ensemble: {problem}")

st.subheader("Champion")
report = champion_report(app.models_dir, app.metrics_dir)
if report is None:
    st.info(f"No served model yet (`{app.models_dir}/serving/serving.json` is missing). "
            f"{ui.REPRO_HINT}", icon=":material/build:")
else:
    f1 = (f" (chosen by validation macro F1 {report.val_f1_macro:.3f})"
          if report.val_f1_macro is not None else "")
    st.markdown(f"**{report.name or 'unnamed model'}**{f1}, served with ONNX Runtime from "
                f"`{report.folder}`. Choose **champion** on the Classify page to use it.")
    for problem in report.problems:
        st.warning(problem)
    members = report.description.get("members")
    if isinstance(members, list):
        st.caption(f"An ensemble of {', '.join(map(str, members))} with weights "
                   f"{report.description.get('weights', 'equal')}.")
    exports = [{"export": variant,
                "test accuracy": figures.get("test_accuracy"),
                "agreement with Keras": figures.get("top1_agreement"),
                "size (MB)": figures.get("size_mb")}
               for variant, figures in report.metrics.items()
               if variant in ("onnx", "int8") and isinstance(figures, dict)]
    if exports:
        st.dataframe(exports, hide_index=True)
        st.caption("Speed depends on the machine, so it is measured, not stored: the export "
                   "stage's MLflow run has each variant's latency and throughput, and "
                   "`python benchmarks/inference.py` times them on this machine.")
    elif not report.metrics:
        st.caption(f"No serving figures (`{app.metrics_dir}/serving.json` is missing). "
                   f"{ui.REPRO_HINT}")
    if report.settings:
        st.caption("Preprocessing: " + ", ".join(f"{key} {value}"
                                                  for key, value in report.settings.items()))
    if report.metrics:
        with st.expander(f"All serving figures ({app.metrics_dir}/serving.json)"):
            st.json(report.metrics)

st.header("Feedback")
counts = count_corrections(app.feedback_dir)
total = sum(counts.values())
st.metric("Corrections saved", total)
if total:
    st.write(f"They wait in `{app.feedback_dir}` for the next `dvc repro`, which adds them to "
             "the training data:")
    st.bar_chart({"letter": [c for c, n in counts.items() if n],
                  "corrections": [n for n in counts.values() if n]},
                 x="letter", y="corrections", height=220)
else:
    st.caption(f"None yet. Corrections made on the Classify page are saved in "
               f"`{app.feedback_dir}` and used by the next `dvc repro`.")

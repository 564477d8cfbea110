"""Classify: upload images or draw a letter, run the chosen models, explain, correct."""

import streamlit as st

from handwriting import labels
from handwriting.app import ui
from handwriting.app.catalog import ENSEMBLE, default_selection
from handwriting.app.config import MAX_UPLOAD_MB, UPLOAD_TYPES
from handwriting.app.features import enlarge, mosaic
from handwriting.app.inference import (
    InputImage,
    image_problem,
    result_row,
    results_csv,
    upload_problem,
)
from handwriting.feedback import FeedbackPathError, save_correction, total_corrections
from handwriting.imaging import ImageError, PreprocessSettings, to_uint8
from handwriting.serving.predictor import UNSURE_MESSAGE

app = ui.config()
st.title("Classify a letter")

choices, _ = ui.models(app)
if not choices:
    ui.need_repro(f"No trained models were found in `{app.models_dir}`, so there is nothing to "
                  "classify with yet.")
    st.stop()
by_name = {choice.name: choice for choice in choices}
selected = st.multiselect(
    "Models", list(by_name), default=default_selection(choices), key="models",
    help="`<arch>-untuned` / `<arch>-tuned`: the trained Keras models; `ensemble`: the "
         "vote of the tuned models that evaluate scores (params.yaml's evaluate section); "
         "`champion`: the served ONNX model.")
settings, settings_origin = ui.preprocess_settings(app)
st.caption(f"Every image goes through the one shared preprocessing ({settings_origin}).")

upload_tab, draw_tab = st.tabs(["Upload images", "Draw a letter"])
with upload_tab:
    uploads = st.file_uploader(
        f"Pictures of single letters ({', '.join(t.upper() for t in UPLOAD_TYPES)}, up to "
        f"{MAX_UPLOAD_MB} MB each)", type=list(UPLOAD_TYPES), accept_multiple_files=True,
        max_upload_size=MAX_UPLOAD_MB, key="uploads")
with draw_tab:
    st.caption("Draw one letter with the mouse or a finger, black on white.")
    st.space("small")  # room for the canvas's floating toolbar
    drawing = ui.canvas_image()

images: list[InputImage] = []
seen: dict[str, str] = {}
for upload in uploads or []:
    data = upload.getvalue()
    problem = upload_problem(upload.name, len(data), max_mb=MAX_UPLOAD_MB, types=UPLOAD_TYPES)
    image = InputImage(upload.name, data)
    problem = problem or image_problem(image, settings)
    if problem:
        st.error(problem, icon=":material/error:")
    elif image.digest in seen:
        st.info(f"{image.name} is the same image as {seen[image.digest]}; shown once.")
    else:
        seen[image.digest] = image.name
        images.append(image)
if drawing is not None:
    problem = image_problem(drawing, settings)
    if problem:
        st.warning("The drawing has no clear letter yet: draw it bigger or bolder.")
    elif drawing.digest not in seen:
        images.append(drawing)

if not images:
    st.info("Upload a picture of a letter or draw one to classify it.", icon=":material/draw:")
    st.stop()
if not selected:
    st.info("Choose at least one model above.")
    st.stop()

show_insight = st.toggle("Show feature maps and Grad-CAM", value=True, key="insight",
                         help="What the first convolutions respond to, and which pixels the "
                              "prediction rests on. Takes a moment per model.")
rows = []
for image in images:
    st.divider()
    header, original = st.columns([4, 1])
    header.subheader(image.name)
    original.image(image.data, caption="as uploaded" if image.name != "drawing" else "drawn",
                   width=96)
    for name in selected:
        choice = by_name[name]
        with st.container(border=True):
            st.markdown(f"**{name}** · {choice.detail}" if choice.detail else f"**{name}**")
            try:
                outcome = ui.run_model(choice, image, settings)
            except (FileNotFoundError, ValueError) as error:
                # ImageError is a ValueError: a model-specific rejection of this image.
                st.error(f"{name}: {error}", icon=":material/error:")
                continue
            rows.append(result_row(image, outcome))
            answer, chart, seen_input, heat = st.columns([1, 2, 1, 1])
            if outcome.unsure:
                answer.metric("Predicted letter", "?")
                answer.warning(f"{UNSURE_MESSAGE.capitalize()}: best guess "
                               f"{outcome.letter} at {outcome.confidence:.1%}.",
                               icon=":material/help:")
            else:
                answer.metric("Predicted letter", outcome.letter)
                answer.caption(f"confidence {outcome.confidence:.1%}")
            chart.bar_chart({"letter": [letter for letter, _ in outcome.top],
                             "probability": [p for _, p in outcome.top]},
                            x="letter", y="probability", horizontal=True, sort="-probability",
                            height=180)
            seen_input.image(enlarge(to_uint8(outcome.model_input)),
                             caption="model input (preprocessed)")
            if not show_insight:
                continue
            if choice.kind == ENSEMBLE:
                heat.caption("The ensemble averages the tuned models: choose them one by one to "
                             "see their feature maps and Grad-CAM.")
                continue
            try:
                found = ui.insight_for(choice, outcome.model_input)
            except ValueError as error:  # a model Grad-CAM and feature maps cannot split
                heat.caption(f"No explanation for {name}: {error}")
                continue
            if found is None:
                heat.caption(f"{name} has no Keras model file (`model.keras`) to explain.")
                continue
            maps, explained = found
            heat.image(enlarge(explained.overlay),
                       caption="Grad-CAM" if explained.method == "grad-cam"
                       else "saliency (no convolution for Grad-CAM)")
            with st.expander("Feature maps of the first convolutions"):
                if not maps:
                    st.caption(f"{name} has no convolution layers (it reads the image row by "
                               "row), so there are no feature maps to show.")
                for layer in maps:
                    height, width, shown = layer.maps.shape
                    st.image(mosaic(layer.maps),
                             caption=f"{layer.layer}: {shown} of {layer.channels} maps, "
                                     f"{height}x{width}")

    wrong, save = st.columns([3, 1], vertical_alignment="bottom")
    right = wrong.selectbox("Wrong? pick the right letter", labels.CLASSES, index=None,
                            placeholder="the right letter", key=f"fix-{image.digest}")
    if save.button("Save correction", key=f"save-{image.digest}", disabled=right is None):
        try:
            path = save_correction(image.data, str(right), app.feedback_dir, name=image.name,
                                   settings=settings or PreprocessSettings())
        except (ImageError, labels.LabelError, FeedbackPathError, OSError) as error:
            st.error(f"Not saved: {error}", icon=":material/error:")
        else:
            st.success(f"Saved as `{path}`: {total_corrections(app.feedback_dir)} corrections "
                       "now wait for the next `dvc repro`.", icon=":material/check:")

if rows:
    st.divider()
    st.subheader("All results")
    st.dataframe(rows, hide_index=True)
    st.download_button("Download the results (CSV)", results_csv(rows),
                       file_name="predictions.csv", mime="text/csv", key="download",
                       on_click="ignore")

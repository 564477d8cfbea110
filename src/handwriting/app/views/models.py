"""Models: the comparison from the evaluate stage, and per architecture its figures, training
curves, confusion matrices, explanations and mistakes."""

import altair as alt
import streamlit as st

from handwriting import labels
from handwriting.app import ui
from handwriting.app.catalog import ENSEMBLE
from handwriting.app.reports import (
    ReportError,
    confusion_cells,
    describe,
    ensemble_description,
    evaluated_architectures,
    load_evaluation,
    model_figures,
    ordered_figures,
    plot_image,
    read_comparison,
    read_confusion,
    read_history,
)
from handwriting.models.reference import VARIANTS, ModelRef

app = ui.config()
st.title("Models")


def figures_table(figures_by_model: dict) -> None:
    """One row per figure, one column per model."""
    names = ordered_figures({key: None for figures in figures_by_model.values()
                             for key in figures})
    st.dataframe([{"figure": name, **{model: figures.get(name)
                                      for model, figures in figures_by_model.items()}}
                  for name in names], hide_index=True)


def training_curves(model: str) -> None:
    """Accuracy and loss per epoch, training against validation."""
    try:
        history = read_history(app.plots_dir, model)
    except ReportError as error:
        st.error(str(error))
        return
    if history is None:
        st.caption(f"No training curves for {model} (`{app.plots_dir}/history/{model}.csv` "
                   f"is missing). {ui.REPRO_HINT}")
        return
    left, right = st.columns(2)
    columns = {key: [row[key] for row in history] for key in history[0]} if history else {}
    if not columns:
        st.caption(f"{model}: the history file has no epochs.")
        return
    left.line_chart(columns, x="epoch", y=["accuracy", "val_accuracy"], height=220,
                    y_label="accuracy")
    right.line_chart(columns, x="epoch", y=["loss", "val_loss"], height=220, y_label="loss")


def confusion(model: str) -> None:
    """A 52x52 heat map of the test predictions (hover a cell for its count)."""
    try:
        matrix = read_confusion(app.plots_dir, model)
    except ReportError as error:
        st.error(str(error))
        return
    if matrix is None:
        st.caption(f"No confusion matrix for {model} "
                   f"(`{app.plots_dir}/evaluate/confusion/{model}.csv` is missing). "
                   f"{ui.REPRO_HINT}")
        return
    order = list(labels.CLASSES)
    chart = alt.Chart(alt.Data(values=confusion_cells(matrix))).mark_rect().encode(
        x=alt.X("predicted:N", sort=order, title="predicted", scale=alt.Scale(domain=order),
                axis=alt.Axis(labelOverlap=False, labelFontSize=8, labelAngle=0)),
        y=alt.Y("actual:N", sort=order, title="actual", scale=alt.Scale(domain=order),
                axis=alt.Axis(labelOverlap=False, labelFontSize=8)),
        color=alt.Color("share:Q", title="share of the row", scale=alt.Scale(scheme="blues")),
        tooltip=["actual:N", "predicted:N", "count:Q", alt.Tooltip("share:Q", format=".0%")],
    ).properties(height=560, title=f"{model}: confusion on the test split "
                                   f"({int(matrix.sum())} images)")
    st.altair_chart(chart)


def pictures(model: str) -> None:
    """The explanation grid and the mistake gallery of the evaluate stage, when present."""
    for kind, title in (("explain", "Where it looks: Grad-CAM / saliency on test images"),
                        ("mistakes", "Its most confident mistakes")):
        path = plot_image(app.plots_dir, kind, model)
        if path is not None:
            with st.expander(f"{model}: {title}"):
                st.image(str(path))


try:
    results = load_evaluation(app.metrics_dir)
except ReportError as error:
    st.error(str(error))
    st.stop()
if results is None:
    ui.need_repro(f"No evaluation results yet (`{app.metrics_dir}/evaluate.json` is missing).")
    st.markdown("The `evaluate` stage scores every model on the held-out test split and writes "
                "the figures, the comparison table, confusion matrices and explanation "
                "pictures that this page shows.")
    st.stop()

figures = model_figures(results)
archs = evaluated_architectures(results)
tabs = st.tabs(["Comparison", *archs, *(["ensemble"] if "ensemble" in figures else [])])

with tabs[0]:
    comparison = read_comparison(app.metrics_dir)
    if comparison is None:
        st.caption(f"`{app.metrics_dir}/comparison.md` is missing. {ui.REPRO_HINT}")
    else:
        st.markdown(comparison)
    st.subheader("Every figure")
    figures_table(figures)

for tab, arch in zip(tabs[1:], archs):
    with tab:
        st.header(arch)
        st.markdown(describe(arch))
        figures_table({key: value for key, value in figures.items()
                       if key != ENSEMBLE and ModelRef.parse(key).arch == arch})
        for variant in VARIANTS:
            model = str(ModelRef(arch, variant))
            st.subheader(model)
            if model not in figures:
                st.caption(f"{model} is not in evaluate.json.")
                continue
            training_curves(model)
            confusion(model)
            pictures(model)

if "ensemble" in figures:
    with tabs[-1]:
        st.header("ensemble")
        st.write(ensemble_description(ui.evaluate_section(app)[0]))
        figures_table({"ensemble": figures["ensemble"]})
        confusion("ensemble")
        pictures("ensemble")

"""Plotly figures of training runs for the Entrenamiento page.

Every figure is built fresh from a DataFrame that `core.jobs.metrics(..., max_points=...)`
already downsampled, and nothing is kept between redraws, so a page polling a run for an hour
uses the same memory as in its first minute. Column names are the engine's metric names
("loss", "acc", "lr/<group>", "grad_norm/<group>", "images_per_s").
"""

from __future__ import annotations

import math

import pandas as pd
import plotly.graph_objects as go

from ui.common import Translator

HEIGHT = 300
TRAIN_COLOUR, VAL_COLOUR = "#1f77b4", "#d62728"
CATEGORY_AXIS = "category"  # class names such as "3" must stay labels, not numbers
MARKERS_AND_LINES = "lines+markers"
MAX_LABELLED_DECADES = 2  # a log axis up to this span gets labels at 1, 2 and 5 of each decade
MAX_UNIT_TICKS = 10  # below this span of steps or epochs, one tick per step or epoch
KEEP_ZOOM = "keep"  # Plotly uirevision: a redraw keeps the user's zoom and hidden traces
REVERSED = "reversed"  # the confusion matrix reads top-down, first class first


def _figure(title: str, x_title: str, y_title: str, log_y: bool = False) -> go.Figure:
    figure = go.Figure()
    # The legend hangs from the figure's bottom edge, under the x-axis title.
    figure.update_layout(title=title, height=HEIGHT, margin=dict(l=10, r=10, t=40, b=60),
                         legend=dict(orientation="h", yref="container", y=0, yanchor="bottom"),
                         uirevision=KEEP_ZOOM)
    figure.update_xaxes(title=x_title)
    figure.update_yaxes(title=y_title)
    if log_y:  # written 1e-4 as in the course, not with Plotly's SI prefix ("100µ")
        figure.update_yaxes(type="log", exponentformat="e")
    return figure


def _few_decade_ticks(figure: go.Figure, values: list[pd.Series]) -> go.Figure:
    """Label a log axis spanning a few decades at 1, 2 and 5 of each, in e-notation ("2e-3").

    Plotly otherwise labels a narrow log axis with bare minor digits ("3, 2, 1e-3, 9, 8").
    """
    positive = pd.concat(values or [pd.Series(dtype=float)])
    positive = positive[positive > 0]
    if not positive.empty and math.log10(positive.max() / positive.min()) <= MAX_LABELLED_DECADES:
        figure.update_yaxes(dtick="D2", tickformat=".0e")
    return figure


def _whole_number_ticks(figure: go.Figure, values: pd.Series) -> go.Figure:
    """Steps and epochs are whole numbers: on a short axis, tick every one instead of 0.2, 0.4..."""
    if values.empty or values.max() - values.min() < MAX_UNIT_TICKS:
        figure.update_xaxes(dtick=1, tick0=0)
    return figure


def _column(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """Rows of `frame` that have metric `name` (a row may lack it, e.g. images_per_s)."""
    if frame.empty or name not in frame.columns:
        return pd.DataFrame({"step": [], "epoch": [], name: []})
    return frame[frame[name].notna()]


def train_val_figure(t: Translator, train: pd.DataFrame, val: pd.DataFrame, metric: str) -> go.Figure:
    """Per-step training values and per-epoch validation values of `metric` ("loss" or "acc")."""
    figure = _figure(t(f"train.chart_{metric}"), t("train.axis_step"), t(f"train.axis_{metric}"))
    rows = _column(train, metric)
    figure.add_trace(go.Scatter(x=rows["step"], y=rows[metric], name=t("train.series_train"),
                                line=dict(color=TRAIN_COLOUR, width=1), opacity=0.8))
    rows = _column(val, metric)
    figure.add_trace(go.Scatter(x=rows["step"], y=rows[metric], name=t("train.series_val"),
                                mode=MARKERS_AND_LINES, line=dict(color=VAL_COLOUR, width=2)))
    return _whole_number_ticks(figure, _column(train, metric)["step"])


def group_figure(t: Translator, train: pd.DataFrame, prefix: str, title_key: str, axis_key: str) -> go.Figure:
    """Draw one line per layer group for the columns named `<prefix>/<group>`, on a log scale."""
    figure = _figure(t(title_key), t("train.axis_step"), t(axis_key), log_y=True)
    drawn = []
    for column in [c for c in train.columns if c.startswith(prefix + "/")]:
        rows = _column(train, column)
        rows = rows[rows[column] > 0]  # a frozen group's LR is 0, which a log axis cannot show
        figure.add_trace(go.Scatter(x=rows["step"], y=rows[column], name=column.split("/", 1)[1],
                                    line=dict(width=1.5)))
        drawn.append(rows[column])
    _few_decade_ticks(figure, drawn)
    return _whole_number_ticks(figure, train["step"] if "step" in train.columns else pd.Series(dtype=float))


def throughput_figure(t: Translator, train: pd.DataFrame) -> go.Figure:
    figure = _figure(t("train.chart_throughput"), t("train.axis_step"), t("train.axis_images_per_s"))
    rows = _column(train, "images_per_s")
    figure.add_trace(go.Scatter(x=rows["step"], y=rows["images_per_s"], name=t("train.series_train"),
                                line=dict(color=TRAIN_COLOUR)))
    return _whole_number_ticks(figure, rows["step"])


def overlay_figure(t: Translator, curves: dict[str, pd.DataFrame], metric: str) -> go.Figure:
    """Validation `metric` per epoch of several runs, one line per run name."""
    figure = _figure(t(f"train.overlay_{metric}"), t("train.axis_epoch"), t(f"train.axis_{metric}"))
    drawn_epochs = [pd.Series(dtype=float)]
    for name, frame in curves.items():
        rows = _column(frame, metric)
        figure.add_trace(go.Scatter(x=rows["epoch"] + 1, y=rows[metric], name=name, mode=MARKERS_AND_LINES))
        drawn_epochs.append(rows["epoch"] + 1)
    epochs = pd.concat(drawn_epochs)
    if epochs.empty:  # no run has finished an epoch yet: a note instead of empty axes
        figure.add_annotation(text=t("train.overlay_empty"), showarrow=False, xref="paper", yref="paper",
                              x=0.5, y=0.5)
        figure.update_xaxes(visible=False)
        figure.update_yaxes(visible=False)
        return figure
    return _whole_number_ticks(figure, epochs)


def confusion_figure(t: Translator, confusion: list[list[int]], class_names: list[str]) -> go.Figure:
    """Rows: true class; columns: predicted class; the counts written in the cells."""
    figure = go.Figure(go.Heatmap(z=confusion, x=class_names, y=class_names, colorscale="Blues",
                                  text=confusion, texttemplate="%{text}", hovertemplate="%{y} → %{x}: %{z}"))
    side = max(HEIGHT, 40 * len(class_names) + 120)
    figure.update_layout(title=t("train.chart_confusion"), height=side, margin=dict(l=10, r=10, t=40, b=10))
    figure.update_xaxes(title=t("train.axis_predicted"), type=CATEGORY_AXIS)
    figure.update_yaxes(title=t("train.axis_true"), type=CATEGORY_AXIS, autorange=REVERSED)
    return figure


def per_class_figure(t: Translator, per_class_acc: list[float | None], class_names: list[str]) -> go.Figure:
    figure = _figure(t("train.chart_per_class"), t("train.axis_class"), t("train.axis_acc"))
    values = [value if value is not None else 0.0 for value in per_class_acc]
    figure.add_trace(go.Bar(x=class_names, y=values, name=t("train.series_val"), marker=dict(color=VAL_COLOUR)))
    figure.update_xaxes(type=CATEGORY_AXIS)
    figure.update_yaxes(range=[0, 1])
    return figure

"""Training-run figures: whole-number step and epoch ticks, e-notation on log axes, empty overlays."""

import pandas as pd

from core.i18n import translate
from ui import run_charts
from ui.common import Translator

T = Translator("en")


def train_rows(steps: int) -> pd.DataFrame:
    return pd.DataFrame({"step": range(steps), "epoch": [0] * steps, "loss": [2.3] * steps,
                         "lr/head": [1e-3] * steps, "lr/stem": [0.0] * steps})


def test_short_run_ticks_every_step():
    figure = run_charts.train_val_figure(T, train_rows(3), pd.DataFrame(), "loss")
    assert figure.layout.xaxis.dtick == 1


def test_long_run_keeps_automatic_ticks():
    figure = run_charts.train_val_figure(T, train_rows(500), pd.DataFrame(), "loss")
    assert figure.layout.xaxis.dtick is None


def test_lr_axis_uses_e_notation():
    figure = run_charts.group_figure(T, train_rows(4), "lr", "train.chart_lr", "train.axis_lr")
    assert figure.layout.yaxis.type == "log"
    assert figure.layout.yaxis.exponentformat == "e"
    assert [trace.name for trace in figure.data] == ["head", "stem"]
    assert len(figure.data[1].x) == 0  # a frozen group's LR of 0 has no place on a log axis


def test_overlay_of_two_epochs_ticks_each():
    curves = {"run": pd.DataFrame({"step": [9, 19], "epoch": [0, 1], "acc": [0.5, 0.8]})}
    figure = run_charts.overlay_figure(T, curves, "acc")
    assert list(figure.data[0].x) == [1, 2]
    assert figure.layout.xaxis.dtick == 1


def test_overlay_without_epochs_shows_note():
    curves = {"run": pd.DataFrame({"step": [], "epoch": [], "acc": []})}
    figure = run_charts.overlay_figure(T, curves, "acc")
    assert figure.layout.annotations[0].text == translate("en", "train.overlay_empty")
    assert figure.layout.xaxis.visible is False


def test_narrow_log_axis_labels_one_two_five():
    figure = run_charts.group_figure(T, train_rows(4), "lr", "train.chart_lr", "train.axis_lr")
    assert figure.layout.yaxis.dtick == "D2"
    assert figure.layout.yaxis.tickformat == ".0e"


def test_wide_log_axis_keeps_decade_labels():
    rows = train_rows(4).assign(**{"lr/head": [1e-6, 1e-4, 1e-2, 1.0]})
    figure = run_charts.group_figure(T, rows, "lr", "train.chart_lr", "train.axis_lr")
    assert figure.layout.yaxis.dtick is None

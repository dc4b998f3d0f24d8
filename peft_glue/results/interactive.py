"""Interactive twins of the report's scatter figures (plotly): hovering a point reads its method, rate, seeds
and value. Saved as plotly JSON beside the PNG (``<name>.plotly.json``); report.html draws it with plotly.js
inlined, report.md keeps the PNG."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

SUFFIX = ".plotly.json"


@dataclass(frozen=True)
class Panel:
    """One cost axis: the points' x values (NaN: not drawn) and the indices of its Pareto front."""

    title: str
    log_scale: bool
    xs: Sequence[float]
    front: Sequence[int]


@dataclass(frozen=True)
class Marker:
    """One point, drawn in every panel at the same height: its label, colour, value, interval and hover."""

    label: str
    color: str
    y: float
    low: float
    high: float
    hover: str


def twin_path(png: Path) -> Path:
    return png.with_name(png.stem + SUFFIX)


def write_scatter_panels(
    png: Path, title: str, y_title: str, markers: list[Marker], panels: list[Panel]
) -> Path:
    """Panels side by side sharing the y axis, one legend entry per marker that toggles it in every panel."""
    fig = make_subplots(rows=1, cols=len(panels), shared_yaxes=True, horizontal_spacing=0.04)
    for column, panel in enumerate(panels, start=1):
        for i, marker in enumerate(markers):
            x = panel.xs[i]
            if x != x:  # NaN: this cost was not recorded for the method
                continue
            error = None
            if marker.low == marker.low:
                error = {"type": "data", "symmetric": False, "array": [marker.high - marker.y],
                         "arrayminus": [marker.y - marker.low], "color": marker.color}  # fmt: skip
            fig.add_trace(
                go.Scatter(
                    x=[x], y=[marker.y], mode="markers", name=marker.label, legendgroup=marker.label,
                    showlegend=column == 1, marker={"color": marker.color, "size": 9}, error_y=error,
                    hovertemplate=f"{marker.hover}<br>{panel.title}: %{{x:,.4g}}<extra></extra>",
                ),
                row=1, col=column,
            )  # fmt: skip
        front = list(panel.front)
        fig.add_trace(
            go.Scatter(
                x=[panel.xs[i] for i in front], y=[markers[i].y for i in front], mode="lines+text",
                line={"shape": "hv", "dash": "dash", "color": "black", "width": 1}, name="Pareto front",
                legendgroup="front", showlegend=column == 1, text=[markers[i].label for i in front],
                textposition="top right", hoverinfo="skip",
            ),
            row=1, col=column,
        )  # fmt: skip
        fig.update_xaxes(
            title_text=panel.title, type="log" if panel.log_scale else "linear", row=1, col=column
        )
    fig.update_yaxes(title_text=y_title, row=1, col=1)
    fig.update_layout(title=title, template="plotly_white", height=480, legend={"font": {"size": 11}})
    path = twin_path(png)
    path.write_text(fig.to_json())
    return path

"""PNG plots for run reports and comparisons.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot, no global backend
switch), so writing a report never opens a window or changes the caller's matplotlib state.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 120
LINESTYLES = ("-", "--", ":", "-.")
TASK_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def _new(width: float, height: float, rows: int = 1, cols: int = 1):
    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png", bbox_inches="tight", pad_inches=0.1)
    return path


def _num(v) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def heatmap(
    values: Sequence[Sequence[float | None]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    title: str,
    colorbar_label: str,
    path: Path,
    std: Sequence[Sequence[float | None]] | None = None,
    intervals: Sequence[Sequence[Sequence[float] | None]] | None = None,
    scale: tuple[float, float] | None = None,
    xlabel: str = "evaluated on task",
    ylabel: str = "after training",
) -> Path:
    """An annotated heatmap of a matrix (rows x columns); missing cells are grey and say "n/a".

    Each cell shows its value and, when given, ``± std`` or its ``[low, high]`` interval. ``scale``
    fixes the colour range (e.g. 0-100): a range stretched to the data would turn noise into contrast.
    """
    import numpy as np

    data = np.array([[(_num(v) if _num(v) is not None else np.nan) for v in row] for row in values], dtype=float)
    fig, axes = _new(1.6 + 1.5 * len(col_labels), 1.3 + 0.65 * len(row_labels))
    ax = axes[0][0]
    finite = data[np.isfinite(data)]
    vmin, vmax = (
        scale if scale is not None else ((float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0))
    )
    if vmin == vmax:
        vmin, vmax = vmin - 1.0, vmax + 1.0
    cmap = _cmap("viridis")
    image = ax.imshow(np.ma.masked_invalid(data), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_facecolor("#d9d9d9")
    ax.set_xticks(range(len(col_labels)), labels=list(col_labels))
    ax.set_yticks(range(len(row_labels)), labels=list(row_labels))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            v = data[i, j]
            if not np.isfinite(v):
                ax.text(j, i, "n/a", ha="center", va="center", color="black", fontsize=9)
                continue
            text = _short(v)
            s = _num(std[i][j]) if std is not None else None
            if s:
                text += f"\n± {_short(s)}"
            interval = intervals[i][j] if intervals is not None else None
            if interval is not None:
                text += f"\n[{_short(interval[0])}, {_short(interval[1])}]"
            shade = (v - vmin) / (vmax - vmin)
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="black" if shade > 0.6 else "white")
    fig.colorbar(image, ax=ax, label=colorbar_label)
    return _save(fig, path)


def _cmap(name: str):
    from matplotlib import colormaps

    return colormaps[name]


def _short(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 0.01:
        return f"{v:.2f}"
    return f"{v:.1e}"


def loss_curves(logs: dict[int, list[dict]], tasks: Sequence[str], path: Path, *, title: str = "Training loss") -> Path:
    """Loss against optimizer step, tasks one after another on one axis, one line per seed and task.

    ``logs``: seed -> the entries of its ``train_log.jsonl`` (``task``, ``step``, ``loss``).
    """
    fig, axes = _new(8, 4.2)
    ax = axes[0][0]
    colors = {t: TASK_COLORS[k % len(TASK_COLORS)] for k, t in enumerate(tasks)}
    boundaries: dict[str, tuple[float, float]] = {}
    labelled = set()
    for seed, entries in sorted(logs.items()):
        offset = 0
        order = list(dict.fromkeys(e["task"] for e in entries))
        for task in order:
            points = [(e["step"], e["loss"]) for e in entries if e["task"] == task]
            if not points:
                continue
            xs = [offset + s for s, _ in points]
            ys = [v for _, v in points]
            label = task if len(logs) == 1 else f"{task}, seed {seed}"
            labelled.add(task)
            color = colors.get(task, "black")
            ax.scatter(xs, ys, color=color, s=6, alpha=0.35, linewidths=0)  # every logged step
            ax.plot(
                xs,
                _smooth(ys),
                color=color,
                linestyle=LINESTYLES[sorted(logs).index(seed) % len(LINESTYLES)],
                alpha=0.9,
                label=label,
            )
            lo, hi = boundaries.get(task, (xs[0], xs[-1]))
            boundaries[task] = (min(lo, xs[0]), max(hi, xs[-1]))
            offset += max(s for s, _ in points)
    for lo, _ in list(boundaries.values())[1:]:
        ax.axvline(lo - 0.5, color="grey", linestyle=(0, (1, 3)), linewidth=1)
    ax.set_xlabel("optimizer step (tasks in training order)")
    ax.set_ylabel("training loss (nats per token)")
    ax.set_title(title + (f" ({len(logs)} seeds)" if len(logs) > 1 else ""))
    ax.grid(alpha=0.3)
    if labelled:
        ax.legend(title="task" if len(logs) == 1 else "task, seed", fontsize=8)
    return _save(fig, path)


def _smooth(values: Sequence[float]) -> list[float]:
    """A centred moving average over about a tenth of the points (at least 1, at most 25 on each side)."""
    half = max(0, min(25, len(values) // 20))
    out = []
    for k in range(len(values)):
        window = values[max(0, k - half) : k + half + 1]
        out.append(sum(window) / len(window))
    return out


def stage_curves(
    values: Sequence[Sequence[float | None]],
    intervals: Sequence[Sequence[Sequence[float] | None]] | None,
    row_labels: Sequence[str],
    tasks: Sequence[str],
    path: Path,
    *,
    ylabel: str,
    title: str,
) -> Path:
    """One line per task across the matrix rows (base, then after each stage), with interval bars."""
    fig, axes = _new(1.6 + 1.4 * len(row_labels), 4.0)
    ax = axes[0][0]
    for j, task in enumerate(tasks):
        pts = [(i, v) for i, row in enumerate(values) if j < len(row) and (v := _num(row[j])) is not None]
        if not pts:
            continue
        xs, ys = [i for i, _ in pts], [v for _, v in pts]
        color = TASK_COLORS[j % len(TASK_COLORS)]
        errors = None
        if intervals is not None:
            ivs = [intervals[i][j] for i in xs]
            known = [iv for iv in ivs if iv is not None]
            if len(known) == len(ivs):
                errors = [
                    [y - iv[0] for y, iv in zip(ys, known, strict=True)],
                    [iv[1] - y for y, iv in zip(ys, known, strict=True)],
                ]
        ax.errorbar(xs, ys, yerr=errors, color=color, marker="o", capsize=4, label=task)
    ax.set_xticks(range(len(row_labels)), labels=list(row_labels))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(title="evaluated on", fontsize=8)
    return _save(fig, path)


def _bars_on(ax, groups, series, *, title, ylabel, errors=None):
    n = max(1, len(series))
    width = 0.8 / n
    for k, (name, values) in enumerate(series.items()):
        xs = [g + (k - (n - 1) / 2) * width for g in range(len(groups))]
        heights = [_num(v) or 0.0 for v in values]
        err = [(_num(e) or 0.0) for e in errors[name]] if errors and name in errors else None
        color = TASK_COLORS[k % len(TASK_COLORS)] if n > 1 else "#4c72b0"
        rects = ax.bar(
            xs,
            heights,
            width=width * 0.95,
            label=name if n > 1 else None,
            color=color,
            yerr=err,
            capsize=3 if err else 0,
        )
        for n_bar, (rect, v) in enumerate(zip(rects, values, strict=True)):
            top = rect.get_height() + (err[n_bar] if err else 0.0)  # above the error bar
            ax.annotate(
                "n/a" if _num(v) is None else _short(float(v)),
                (rect.get_x() + rect.get_width() / 2, top),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )
    ax.set_xticks(
        range(len(groups)),
        labels=list(groups),
        rotation=20 if max(map(len, groups)) > 12 else 0,
        ha="right" if max(map(len, groups)) > 12 else "center",
    )
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.grid(axis="y", alpha=0.3)
    ax.margins(y=0.15)
    if all((_num(v) or 0.0) == 0.0 for values in series.values() for v in values):
        ax.set_ylim(-1, 1)  # all zero: keep a readable axis instead of matplotlib's 1e-17 scale
    if n > 1:
        ax.legend(fontsize=8)


def bar_panels(groups: Sequence[str], panels: list[dict], path: Path, *, cols: int = 2) -> Path:
    """Several bar charts in one figure; each panel: ``{"title", "ylabel", "series": {name: values}}``."""
    rows = math.ceil(len(panels) / cols)
    fig, axes = _new(max(10.0, 1.1 * len(groups) * cols + 2), 3.6 * rows, rows, cols)
    for k, panel in enumerate(panels):
        _bars_on(
            axes[k // cols][k % cols],
            groups,
            panel["series"],
            title=panel["title"],
            ylabel=panel["ylabel"],
            errors=panel.get("errors"),
        )
    for k in range(len(panels), rows * cols):
        axes[k // cols][k % cols].set_visible(False)
    return _save(fig, path)

"""The memo's charts: small matplotlib PNGs, legible at e-mail width (600 px).

Each returns None when it would have nothing to draw (a new install, a quiet month): the memo
then says so in words (templates/mail/monthly_memo.html) instead of an empty or broken image."""

from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")  # headless: no display, no GUI toolkit

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

INK, MUTED, ACCENT, WARN, LIGHT = "#1f2933", "#6b7785", "#3d5afe", "#e4572e", "#c9d2ff"
NO_DATA = "no data yet"  # a panel with no value in any month
plt.rcParams.update({
    "font.size": 10, "axes.edgecolor": "#cbd2d9", "axes.labelcolor": MUTED,
    "xtick.color": MUTED, "ytick.color": INK, "axes.spines.top": False,
    "axes.spines.right": False, "axes.titleweight": "bold", "axes.titlesize": 10,
    "axes.titlelocation": "left", "svg.hashsalt": "handoff",
})


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight",
                metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def _label(stage: str) -> str:
    return stage.replace("_", " ").capitalize()


def kpi_trends(monthly: pd.DataFrame) -> bytes | None:
    """Four small panels, one line each: speed, communication, quality, founder load."""
    panels = (
        ("Speed (median business days)", [("median_close_to_kickoff_days", "close → kickoff"),
                                          ("median_kickoff_to_ready_days", "kickoff → ready")],
         False),
        ("SLA adherence", [("sla_adherence", "on time")], True),
        ("Handoff rework", [("handoff_rework_rate", "clients reworked")], True),
        ("Founder interruptions per week", [("founder_interruptions_per_week", "per week")],
         False),
    )
    columns = [column for _title, lines, _pct in panels for column, _label in lines]
    if monthly[columns].astype(float).isna().all().all():
        return None
    months = [pd.Period(m, freq="M").strftime("%b") for m in monthly["month"]]
    fig, axes = plt.subplots(2, 2, figsize=(6.4, 4.4))
    x = list(range(len(months)))
    for ax, (title, lines, pct) in zip(axes.flat, panels, strict=True):
        empty = monthly[[column for column, _label in lines]].astype(float).isna().all().all()
        for index, (column, label) in enumerate(lines):
            values = monthly[column].astype(float) * (100 if pct else 1)
            color = ACCENT if index == 0 else WARN
            ax.plot(x, values, marker="o", color=color, linewidth=2, label=label)
            last = values.iloc[-1]
            if not math.isnan(last):
                ax.annotate(f"{last:.0f}%" if pct else f"{last:.1f}", (len(months) - 1, last),
                            textcoords="offset points", xytext=(4, 4), color=color,
                            fontsize=9, fontweight="bold")
        ax.set_title(title)
        # Every month on the axis, even where a panel has no value (NaN points set no limits).
        ax.set_xticks(x, months)
        ax.set_xlim(-0.5, len(months) - 0.5)
        ax.set_ylim(bottom=0, top=105 if pct else (1 if empty else None))
        if empty:
            ax.text(0.5, 0.5, NO_DATA, transform=ax.transAxes, ha="center", va="center",
                    color=MUTED, fontsize=9)
        ax.grid(axis="y", color="#eef1f4")
        if len(lines) > 1 and not empty:
            ax.legend(frameon=False, fontsize=8, loc="lower left")
    fig.tight_layout(h_pad=1.6)
    return _png(fig)


def stage_aging(this_month: pd.Series, last_month: pd.Series,
                sla_days: pd.Series) -> bytes | None:
    """Median business days per stage this month against last month, with each stage's SLA."""
    if this_month.isna().all() and last_month.isna().all():
        return None
    stages = list(this_month.index)
    fig, ax = plt.subplots(figsize=(6.4, 2.8))
    y = range(len(stages))
    ax.barh([i + 0.2 for i in y], last_month.reindex(stages).fillna(0), height=0.38,
            color=LIGHT, label="last month")
    ax.barh([i - 0.2 for i in y], this_month.fillna(0), height=0.38, color=ACCENT,
            label="this month")
    for i, stage in enumerate(stages):
        sla = sla_days.get(stage)
        if sla is not None and not math.isnan(sla):
            ax.plot([sla, sla], [i - 0.45, i + 0.45], color=WARN, linewidth=2)
        value = this_month.get(stage)
        if value is not None and not math.isnan(value):
            ax.text(value + 0.1, i - 0.2, f"{value:.1f}", va="center", fontsize=9, color=INK)
    ax.set_yticks(list(y), [_label(s) for s in stages])
    ax.invert_yaxis()
    ax.set_xlabel("business days in stage (median); red tick = stage SLA")
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    fig.tight_layout()
    return _png(fig)


def blockers_by_type(table: pd.DataFrame) -> bytes | None:
    """Blocked business days by blocker type this month, with the count of blockers opened."""
    table = table[(table["opened"] > 0) | (table["blocked_days"] > 0)]
    if table.empty:
        return None
    table = table.sort_values("blocked_days", ascending=True)
    fig, ax = plt.subplots(figsize=(6.4, 2.6))
    labels = [_label(t) for t in table["type"]]
    bars = ax.barh(labels, table["blocked_days"], color=ACCENT)
    bars[-1].set_color(WARN)  # the top root cause
    for bar, days, opened in zip(bars, table["blocked_days"], table["opened"], strict=True):
        ax.annotate(f"{days:.0f} d · {opened} opened",
                    (bar.get_width(), bar.get_y() + bar.get_height() / 2),
                    textcoords="offset points", xytext=(4, 0), va="center", fontsize=9,
                    color=INK)
    ax.set_xlabel("business days blocked this month")
    ax.set_xlim(right=max(float(table["blocked_days"].max()) * 1.35, 1))
    fig.tight_layout()
    return _png(fig)

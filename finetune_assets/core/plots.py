"""Small PNG charts for asset metadata: people read a loss curve faster than a column of numbers."""
from __future__ import annotations

import io
from collections.abc import Mapping, Sequence


def _figure():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    _figure().close(fig)
    return buffer.getvalue()


def loss_curve_png(history: Sequence[Mapping]) -> bytes:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    # A model soup's members each start at step 1: one line per member, labelled by its seed.
    members = list(dict.fromkeys(h.get("member_seed") for h in history))
    for member in members:
        points = [h for h in history if h.get("member_seed") == member]
        ax.plot([h["step"] for h in points], [h["loss"] for h in points], marker="o", markersize=3,
                label=None if member is None else f"seed {member}")
    if len(members) > 1:
        ax.legend()
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    return _png(fig)


def metric_bars_png(results: Mapping[str, Mapping[str, float]], metrics: Sequence[str]) -> bytes:
    """Grouped bars: one group per metric, one bar per system (e.g. bm25, base, tuned)."""
    plt = _figure()
    systems = list(results)
    width = 0.8 / max(1, len(systems))
    fig, ax = plt.subplots(figsize=(max(6, len(metrics) * 0.9), 3.4))
    for i, system in enumerate(systems):
        positions = [m + i * width for m in range(len(metrics))]
        ax.bar(positions, [results[system].get(name, 0.0) for name in metrics], width, label=system)
    ax.set_xticks([m + width * (len(systems) - 1) / 2 for m in range(len(metrics))], metrics, rotation=30)
    ax.set_ylim(0, 1)
    ax.legend()
    ax.set_title("Retrieval quality on held-out queries")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)

"""The report's plots: matplotlib on the Agg canvas, one function per figure.

Figures are made as `matplotlib.figure.Figure` objects, never through pyplot, so nothing is kept in a
global registry and no display is needed. Every figure is 11 inches wide at 100 dpi (1100 pixels,
the report's column width), labelled, and drawn with the Okabe-Ito colour-blind-safe palette.
"""

from __future__ import annotations

import functools
import io

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from s2l.report.analysis import LP, Agreement, Clusters, DataMap, NO_SOURCE

WIDTH = 11.0  # inches; at DPI this is the report's column width in pixels
DPI = 100
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"]
POOL = "#9A9A9A"  # the pool, drawn behind a selection
STYLE = {
    "font.size": 12, "axes.titlesize": 13, "axes.labelsize": 12, "legend.fontsize": 11,
    "xtick.labelsize": 11, "ytick.labelsize": 11, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.25,
}
MAX_CLUSTER_LINES = 8  # per panel of the cluster means
MAX_SAMPLE_PANELS = 12  # small multiples of individual curves
CURVES_PER_PANEL = 15
MAX_MAP_PANELS = 6
MAX_SOURCE_BARS = 15
MAX_POINTS = 20_000  # per scatter layer; a seeded sample of larger sets is drawn (the numbers use them all)


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def styled(draw):
    """Draw under the report's style without changing the caller's matplotlib settings."""
    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        import matplotlib

        with matplotlib.rc_context(STYLE):
            return draw(*args, **kwargs)
    return wrapper


def new_figure(height: float, width: float = WIDTH) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI)


def png(fig: Figure, rect=(0, 0, 1, 1), crop: bool = False) -> bytes:
    """The figure as PNG bytes (no timestamp in the metadata, so the same inputs give the same file).
    `rect`: the part of the figure tight_layout fills; `crop`: trim the margins (one more drawing pass)."""
    fig.tight_layout(rect=rect)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None}, facecolor="white",
                **({"bbox_inches": "tight", "pad_inches": 0.12} if crop else {}))
    fig.clear()
    return buffer.getvalue()


def grid(n: int, columns: int) -> tuple[int, int]:
    columns = max(1, min(columns, n))
    return (n + columns - 1) // columns, columns


def log_scale_helps(values: np.ndarray) -> bool:
    """Losses falling by more than 20x over training crowd near zero on a linear axis: use a log one."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return len(values) > 0 and values.min() > 0 and values.max() / values.min() > 20


def thin(mask: np.ndarray, limit: int = MAX_POINTS, seed: int = 0) -> np.ndarray:
    """Rows of `mask` to draw: all of them, or a seeded random `limit` of them."""
    rows = np.flatnonzero(mask)
    if len(rows) <= limit:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size=limit, replace=False))


def _short(text: str, n: int = 22) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# -- the pool -------------------------------------------------------------------------------------------------
@styled
def pool_figure(sources: dict[str, int] | None, lengths: np.ndarray, truncated_at: int | None) -> bytes:
    with_sources = bool(sources)
    fig = new_figure(3.8)
    axes = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.1, 1]}) if with_sources else [None, fig.subplots()]
    if with_sources:
        ax = axes[0]
        shown = list(sources.items())[:MAX_SOURCE_BARS]
        names = [_short(n) for n, _ in shown][::-1]
        counts = [c for _, c in shown][::-1]
        bars = ax.barh(names, counts, color=colour(0))
        ax.bar_label(bars, padding=3, fontsize=11)
        ax.set_xlabel("examples")
        more = len(sources) - len(shown)
        ax.set_title("Examples per source" + (f" (largest {len(shown)}; {more} more in the table)" if more else ""))
        ax.set_xlim(0, max(counts) * 1.15)
        ax.grid(axis="y", visible=False)
    ax = axes[1]
    if len(lengths):
        ax.hist(lengths, bins=min(40, max(5, len(np.unique(lengths)))), color=colour(1), edgecolor="white")
        ax.axvline(np.median(lengths), color="black", linestyle="--", linewidth=1.2,
                   label=f"median {np.median(lengths):.0f}")
        if truncated_at:
            ax.axvline(truncated_at, color=colour(3), linestyle=":", linewidth=1.2, label=f"max length {truncated_at}")
        ax.legend(loc="upper right")
    ax.set_xlabel("response tokens (loss-carrying)")
    ax.set_ylabel("examples")
    ax.set_title("Response length")
    return png(fig)


# -- trajectories ----------------------------------------------------------------------------------------------
@styled
def cluster_means_figure(losses: np.ndarray, x: np.ndarray, x_label: str, clusters: Clusters,
                         selected: np.ndarray | None) -> bytes:
    """One panel per source (or one for the pool); in each, the largest clusters' mean curves with their
    interquartile band, each labelled at its right end with its name and size."""
    groups = list(clusters.groups.items())[:MAX_SAMPLE_PANELS]
    rows, cols = grid(len(groups), 3)
    height = 4.6 if len(groups) == 1 else 3.2 * rows + 0.4
    means = np.stack([losses[clusters.labels == c].mean(axis=0) for _, m in groups for c in m[:MAX_CLUSTER_LINES]])
    log = log_scale_helps(means)
    fig = new_figure(height)
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)).ravel()
    ends = []
    for ax, (group, members) in zip(axes, groups):
        if log:
            ax.set_yscale("log")
        for i, c in enumerate(members[:MAX_CLUSTER_LINES]):
            curves = losses[clusters.labels == c]
            mean = curves.mean(axis=0)
            q25, q75 = np.quantile(curves, [0.25, 0.75], axis=0)
            ax.plot(x, mean, color=colour(i), linewidth=2, marker="o", markersize=3.5)
            ax.fill_between(x, q25, q75, color=colour(i), alpha=0.12, linewidth=0)
            ends.append((ax, mean[-1], f"c{c} ({clusters.sizes[c]})", colour(i)))
        more = len(members) - MAX_CLUSTER_LINES
        title = group if group != "pool" else "all examples"
        ax.set_title(_short(title, 40) + (f"  (+{more} smaller clusters)" if more > 0 else ""))
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    span = x[-1] - x[0] if len(x) > 1 else 1.0
    axes[0].set_xlim(x[0] - 0.04 * span, x[-1] + (0.30 if len(groups) > 1 else 0.14) * span)
    for ax in axes[: len(groups)]:
        _label_line_ends(ax, x[-1] + 0.03 * span, [e for e in ends if e[0] is ax], log)
    _label_grid(axes[: len(groups)], cols, x_label, "mean response loss" + (" (log)" if log else ""))
    fig.suptitle("Mean loss trajectory of each cluster, labelled with its size (band: 25–75% of its members)",
                 fontsize=13)
    return png(fig)


def _label_line_ends(ax, at: float, ends: list, log: bool) -> None:
    """Write each line's label just right of its last point, nudged apart so that no two overlap."""
    if not ends:
        return
    lo, hi = ax.get_ylim()
    to = (lambda v: np.log10(v)) if log else (lambda v: v)
    back = (lambda v: 10 ** v) if log else (lambda v: v)
    lo, hi = to(lo), to(hi)
    gap = 0.085 * (hi - lo)
    y = np.array([to(e[1]) for e in ends], dtype=float)
    order = np.argsort(y)
    placed = y.copy()
    for a, b in zip(order[:-1], order[1:]):
        placed[b] = max(placed[b], placed[a] + gap)
    overflow = placed[order[-1]] - (hi - gap / 2)
    if overflow > 0:
        placed -= overflow
    for (_, _, text, tint), where in zip(ends, placed):
        tint = "#8C7A00" if tint == "#F0E442" else tint  # the palette's yellow is too pale for text
        ax.text(at, back(where), text, color=tint, fontsize=10.5, va="center", ha="left", fontweight="bold")


@styled
def cluster_samples_figure(losses: np.ndarray, x: np.ndarray, x_label: str, clusters: Clusters, seed: int
                           ) -> tuple[bytes, list[tuple[str, int]]]:
    """Small multiples: a few individual curves of each cluster with its mean. Returns the PNG and the
    (group, cluster) panels drawn."""
    panels: list[tuple[str, int]] = []
    queues = {g: list(m) for g, m in clusters.groups.items()}
    while len(panels) < MAX_SAMPLE_PANELS and any(queues.values()):
        for g in list(queues):
            if queues[g] and len(panels) < MAX_SAMPLE_PANELS:
                panels.append((g, queues[g].pop(0)))
    rows, cols = grid(len(panels), 4)
    two_lines = list(clusters.groups) != ["pool"]
    fig = new_figure((3.0 if two_lines else 2.7) * rows + 0.5)
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)).ravel()
    rng = np.random.default_rng(seed)
    drawn = []
    for ax, (g, c) in zip(axes, panels):
        members = np.flatnonzero(clusters.labels == c)
        sample = np.sort(rng.choice(members, size=min(CURVES_PER_PANEL, len(members)), replace=False))
        drawn.append(losses[sample])
        tint = colour(clusters.groups[g].index(c))  # the cluster's colour in the means figure
        tint = "#777777" if tint == "#000000" else tint
        for r in sample:
            ax.plot(x, losses[r], color=tint, alpha=0.45, linewidth=1.0)
        ax.plot(x, losses[members].mean(axis=0), color="black", linewidth=2)
        name = "" if g == "pool" else _short(g, 26) + "\n"
        ax.set_title(f"{name}c{c}: {len(sample)} of {len(members)} drawn", fontsize=11.5)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    log = False
    if drawn:
        values = np.concatenate([d.ravel() for d in drawn])
        lo, hi = np.quantile(values, [0.005, 0.995])
        log = log_scale_helps(values)
        if log:
            axes[0].set_yscale("log")
            axes[0].set_ylim(lo / 1.2, hi * 1.2)
        else:
            pad = 0.05 * (hi - lo or 1.0)
            axes[0].set_ylim(lo - pad, hi + pad)
    _label_grid(axes[: len(panels)], cols, x_label, "loss" + (" (log)" if log else ""))
    fig.suptitle("Individual trajectories (thin, the cluster's colour) and the cluster mean (black)", fontsize=13)
    return png(fig), panels


# -- learning percentage ----------------------------------------------------------------------------------------
def lp_range(values: np.ndarray) -> tuple[float, float]:
    """The x range of an LP plot: the central 98% of the values with a margin, widened to show the 0 and 1
    boundaries when they are near; values beyond it are drawn at its edges."""
    lo, hi = (float(v) for v in np.quantile(values, [0.01, 0.99]))
    span = max(hi - lo, 0.05)
    lo, hi = lo - 0.08 * span, hi + 0.08 * span
    for boundary in (0.0, 1.0):
        if lo - 0.5 * span <= boundary < lo:
            lo = boundary - 0.05 * span
        if hi < boundary <= hi + 0.5 * span:
            hi = boundary + 0.05 * span
    return lo, hi


@styled
def lp_figure(lp: LP, cuts: list[tuple[str, float]], overlay: tuple[str, np.ndarray] | None) -> bytes:
    values = lp.values[np.isfinite(lp.values)]
    lo, hi = lp_range(values)
    # About 40 bins whose edges fall on 0 and on 1, so a bar is either inside [0, 1] or outside it.
    width = 1.0 / np.ceil(40 / (hi - lo)) if hi - lo <= 40 else float(np.ceil((hi - lo) / 40))
    bins = np.arange(np.floor(lo / width), np.ceil(hi / width) + 1) * width
    lo, hi = bins[0], bins[-1]
    fig = new_figure(3.9)
    ax = fig.subplots()
    if lo < 0:
        ax.axvspan(lo, min(0.0, hi), color=colour(3), alpha=0.08, linewidth=0)
    if hi > 1:
        ax.axvspan(max(1.0, lo), hi, color=colour(3), alpha=0.08, linewidth=0)
    _, _, patches = ax.hist(np.clip(values, lo, hi), bins=bins, color=POOL, edgecolor="white")
    handles = [Patch(color=POOL, label=f"pool ({len(values)})")]
    outside = [p for p, left in zip(patches, bins[:-1]) if left < -1e-12 or left >= 1 - 1e-12]
    for p in outside:
        p.set_facecolor(colour(3))
    if lp.below + lp.above:
        handles.append(Patch(color=colour(3), label=f"pool, outside [0, 1] ({lp.below + lp.above})"))
    if overlay is not None:
        name, chosen = overlay
        chosen = chosen[np.isfinite(chosen)]
        ax.hist(np.clip(chosen, lo, hi), bins=bins, color=colour(0), alpha=0.85, edgecolor="white")
        handles.append(Patch(color=colour(0), label=f"selected by {_short(name, 30)} ({len(chosen)})"))
    for i, (label, at) in enumerate(cuts):
        handles.append(ax.axvline(at, color=colour(i + 1) if overlay is None or i else colour(1), linestyle="--",
                                  linewidth=1.8, label=label))
    ax.set_xlim(lo, hi)
    ax.set_xlabel("LP(1) = (P0 − P1) / (P0 − Pn)    "
                  "(lower = harder; shaded: outside [0, 1], clipped into the edge bins)")
    ax.set_ylabel("examples")
    ax.set_title(f"Learning percentage LP(1): {lp.below} below 0, {lp.within} in [0, 1], {lp.above} above 1")
    ax.legend(handles=handles, loc="upper left")
    return png(fig)


# -- data map --------------------------------------------------------------------------------------------------
@styled
def data_map_figure(dm: DataMap, panels: list[tuple[str, np.ndarray]], sources: np.ndarray | None) -> bytes:
    ok = np.isfinite(dm.confidence) & np.isfinite(dm.variability)
    if not panels:  # no selection: one map, coloured by source
        fig = new_figure(4.6, width=7.5)
        ax = fig.subplots()
        names = sources if sources is not None else np.full(len(ok), NO_SOURCE, dtype=object)
        distinct = sorted(set(names[ok].tolist()))
        for i, name in enumerate(distinct[: len(PALETTE)]):
            rows = thin(ok & (names == name))
            ax.scatter(dm.variability[rows], dm.confidence[rows], s=14, color=colour(i), alpha=0.75,
                       label=_short(name, 24) if name != NO_SOURCE else "all examples")
        if len(distinct) > len(PALETTE):
            rows = thin(ok & ~np.isin(names, distinct[: len(PALETTE)]))
            ax.scatter(dm.variability[rows], dm.confidence[rows], s=14, color=POOL, alpha=0.6,
                       label=f"{len(distinct) - len(PALETTE)} other sources")
        ax.set_xlabel("variability (std of exp(−loss) over snapshots)")
        ax.set_ylabel("confidence (mean exp(−loss))")
        ax.set_title("Data map of the pool")
        ax.legend(loc="best", fontsize=10)
        return png(fig)
    shown = panels[:MAX_MAP_PANELS]
    rows, cols = grid(len(shown), 3)
    fig = new_figure(3.6 * rows + 0.3)
    axes = np.atleast_1d(fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False)).ravel()
    for i, (ax, (name, selected)) in enumerate(zip(axes, shown)):
        rest, chosen = thin(ok & ~selected), thin(ok & selected)
        ax.scatter(dm.variability[rest], dm.confidence[rest], s=9, color=POOL, alpha=0.5)
        ax.scatter(dm.variability[chosen], dm.confidence[chosen], s=14, color=colour(i), alpha=0.9)
        ax.set_title(f"{_short(name, 28)}: {int((ok & selected).sum())} selected")
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    for i, ax in enumerate(axes[: len(shown)]):
        if i + cols >= len(shown):
            ax.set_xlabel("variability")
            ax.tick_params(labelbottom=True)
        if i % cols == 0:
            ax.set_ylabel("confidence")
    fig.suptitle("Data map: confidence (mean exp(−loss)) vs variability (its std) over the trained snapshots;\n"
                 "coloured: the selection's examples, grey: the rest of the pool", fontsize=13)
    return png(fig)


# -- one selection against the pool -------------------------------------------------------------------------------
@styled
def selection_figure(name: str, pool_sources: dict[str, int] | None, selected_sources: dict[str, int] | None,
                     lengths: np.ndarray, final: np.ndarray, selected: np.ndarray, usable: np.ndarray) -> bytes:
    with_sources = bool(pool_sources)
    n_panels = 3 if with_sources else 2
    shown = list(pool_sources)[:MAX_SOURCE_BARS] if with_sources else []
    fig = new_figure(max(3.6, 0.32 * len(shown) + 1.4))
    axes = list(np.atleast_1d(fig.subplots(1, n_panels, gridspec_kw={"width_ratios": [1.25, 1, 1][-n_panels:]})))
    if with_sources:
        ax = axes.pop(0)
        total_pool = sum(pool_sources.values())
        total_sel = max(1, sum(selected_sources.values()))
        y = np.arange(len(shown))[::-1]
        pool_pct = [100 * pool_sources[s] / total_pool for s in shown]
        sel_pct = [100 * selected_sources.get(s, 0) / total_sel for s in shown]
        ax.barh(y + 0.2, pool_pct, height=0.4, color=POOL, label="pool")
        ax.barh(y - 0.2, sel_pct, height=0.4, color=colour(0), label="selection")
        ax.set_yticks(y, [_short(s, 20) for s in shown])
        ax.set_xlabel("% of examples")
        ax.set_title("Source mix")
        ax.grid(axis="y", visible=False)
    for ax, values, label, title in ((axes[0], lengths, "response tokens", "Response length"),
                                     (axes[1], final, "final-snapshot loss", "Final loss")):
        v_pool = values[usable]
        v_sel = values[usable & selected]
        bins = np.histogram_bin_edges(v_pool, bins=min(30, max(5, len(np.unique(v_pool)))))
        ax.hist(v_pool, bins=bins, density=True, color=POOL, alpha=0.6, label="pool")
        ax.hist(v_sel, bins=bins, density=True, histtype="step", linewidth=2, color=colour(0), label="selection")
        ax.axvline(np.median(v_pool), color=POOL, linestyle="--", linewidth=1.2)
        if len(v_sel):
            ax.axvline(np.median(v_sel), color=colour(0), linestyle="--", linewidth=1.2)
        ax.set_xlabel(label)
        ax.set_ylabel("density")
        ax.set_title(title + " (dashed: medians)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.suptitle(f"{_short(name, 60)} against the pool", fontsize=13.5, x=0.01, ha="left")
    fig.legend(handles, ["pool", "selection"], loc="upper right", ncol=2, frameon=False, fontsize=12)
    return png(fig)


# -- overlap ------------------------------------------------------------------------------------------------------
@styled
def overlap_figure(names: list[str], jac: np.ndarray) -> bytes:
    n = len(names)
    side = min(9.0, 2.2 + 0.75 * n)
    fig = new_figure(side * 0.85, width=side + 1.2)
    ax = fig.subplots()
    image = ax.imshow(jac, vmin=0, vmax=1, cmap="viridis")
    labels = [_short(s, 24) for s in names]
    ax.set_xticks(range(n), labels, rotation=35, ha="right")
    ax.set_yticks(range(n), labels)
    ax.grid(False)
    size = 11 if n <= 6 else 9
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{jac[i, j]:.2f}", ha="center", va="center", fontsize=size,
                    color="black" if jac[i, j] > 0.6 else "white")
    fig.colorbar(image, ax=ax, label="Jaccard |A∩B| / |A∪B|", fraction=0.046, pad=0.04)
    ax.set_title("Pairwise overlap of the selections")
    return png(fig, crop=True)


# -- proxy -> target --------------------------------------------------------------------------------------------------
@styled
def agreement_figure(ag: Agreement, proxy: str, target: str) -> bytes:
    with_lp = ag.lp_pairs is not None and len(ag.lp_pairs[0]) > 0
    fig = new_figure(4.6)
    axes = list(np.atleast_1d(fig.subplots(1, 2 if with_lp else 1)))
    pairs = [(axes[0], ag.loss_pairs, ag.loss_rho, "final-snapshot loss")]
    if with_lp:
        pairs.append((axes[1], ag.lp_pairs, ag.lp_rho, "LP(1)"))
    for i, (ax, (a, b), rho, what) in enumerate(pairs):
        if what == "LP(1)":  # each axis over its own central range; the tails drawn at its edges
            a, b = np.clip(a, *lp_range(a)), np.clip(b, *lp_range(b))
        drawn = thin(np.ones(len(a), dtype=bool))
        ax.scatter(a[drawn], b[drawn], s=14, color=colour(i), alpha=0.7)
        ax.set_xlabel(f"proxy: {_short(proxy, 40)}")
        ax.set_ylabel(f"target: {_short(target, 40)}")
        ax.set_title(f"{what}: Spearman ρ = {rho:.3f} (n = {len(a)})")
    fig.suptitle("Proxy → target agreement on the same examples", fontsize=13)
    return png(fig)


def _label_grid(axes, cols: int, x_label: str, y_label: str) -> None:
    """Small multiples: x labels on the bottom panel of each column, y labels on the first of each row."""
    for i, ax in enumerate(axes):
        if i + cols >= len(axes):
            ax.set_xlabel(x_label)
            ax.tick_params(labelbottom=True)
        if i % cols == 0:
            ax.set_ylabel(y_label)

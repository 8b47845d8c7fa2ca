"""`build_report`: a run (and its selections) in, one self-contained HTML file plus its PNGs out.

    OUT/report.html        every section; plots inline as base64 PNG, CSS inline, no script
    OUT/figures/*.png      the same plots as files

The folder is built under a temporary name beside OUT and renamed into place, so a failed or killed
report leaves either the previous report or none, never half of one.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from s2l import __version__
from s2l.errors import InputError
from s2l.report import analysis, figures, html
from s2l.report.inputs import Run, Selection, load_run, load_selection, load_target

SECTIONS = {
    "header": "What made this report",
    "pool": "The pool",
    "trajectories": "Loss trajectories",
    "learning-percentage": "Learning percentage",
    "data-map": "Data map",
    "selections": "Selections against the pool",
    "overlap": "Overlap between selections",
    "agreement": "Proxy → target agreement",
}
LP_QUANTILE = 0.10  # where the LP line goes when no lp selection is given
MAX_CLUSTER_ROWS = 30


@dataclass
class Report:
    """What the sections are built from, and the figures made on the way (name -> PNG bytes)."""

    run: Run
    selections: list[Selection]
    target: Run | None
    clusters: int | None
    seed: int
    figures: dict[str, bytes] = field(default_factory=dict)

    def figure(self, name: str, png: bytes, alt: str, caption: str | None = None, narrow: bool = False) -> str:
        name = slug(name)
        self.figures[name] = png
        return html.figure(png, alt, caption, name=f"figures/{name}.png", narrow=narrow)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "figure"


def build_report(run: str | Path, selections=(), out: str | Path = "report", target_run: str | Path | None = None,
                 clusters: int | None = None, seed: int = 0) -> Path:
    """Write OUT/report.html and OUT/figures/*.png for a trajectory run and any selections made from its pool.

    run          a run directory from `s2l record` or `s2l score`
    selections   selection directories from `s2l select` over the same pool
    out          the report folder (replaced when it holds a previous report; refused when it holds anything else)
    target_run   a second run over the same pool (a larger model): adds the proxy → target agreement
    clusters     K for the clusters drawn in the trajectories section; by default an s2l selection's
                 clusters, else S2L's K-means fitted here with K = min(8, usable examples / 10)
    seed         for the clusters fitted here and the sample of curves drawn
    Returns the path of report.html."""
    out = Path(out)
    if isinstance(selections, (str, Path)):
        selections = [selections]
    _check_out(out)
    loaded = load_run(run)
    chosen: list[Selection] = []
    for path in selections:
        chosen.append(load_selection(path, loaded, {s.name for s in chosen}))
    target = load_target(target_run, loaded) if target_run is not None else None
    report = Report(loaded, chosen, target, clusters, seed)
    document = render(report)
    return _write(out, document, report.figures)


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "report.html").is_file())):
        raise InputError("the output folder exists and is not a previous report; choose another one", out)
    parent = out.parent if str(out.parent) else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise InputError("cannot write here (permission denied)", parent)


def _write(out: Path, document: str, images: dict[str, bytes]) -> Path:
    from s2l.fileio import building_directory, remove_leftovers

    remove_leftovers(out.parent, beside=out.name)  # of a killed `report` into the same --out
    with building_directory(out) as tmp:  # the previous report goes once the new one is whole
        (tmp / "figures").mkdir()
        for name, data in images.items():
            (tmp / "figures" / f"{name}.png").write_bytes(data)
        (tmp / "report.html").write_text(document, encoding="utf-8")
        for path in [tmp / "report.html", *sorted((tmp / "figures").iterdir())]:
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    return out / "report.html"


# -- the document ----------------------------------------------------------------------------------------------
def render(report: Report) -> str:
    lp = analysis.learning_percentage(report.run)
    builders = {
        "header": lambda: header_section(report),
        "pool": lambda: pool_section(report),
        "trajectories": lambda: trajectories_section(report),
        "learning-percentage": lambda: lp_section(report, lp),
        "data-map": lambda: data_map_section(report),
        "selections": lambda: selections_section(report, lp),
        "overlap": lambda: overlap_section(report),
        "agreement": lambda: agreement_section(report, lp),
    }
    sections = [(key, SECTIONS[key], build()) for key, build in builders.items()]
    m = report.run.manifest
    lead = (f"Run <code>{html.esc(report.run.root)}</code>: {report.run.n} examples, "
            f"{report.run.trajectories.losses.shape[1]} snapshots of proxy {html.esc(_model(m))}; "
            f"{len(report.selections)} selection(s)"
            + (f"; target run <code>{html.esc(report.target.root)}</code>" if report.target else "") + ".")
    footer = (f"Made by s2l {html.esc(__version__)} (<code>build_report</code>, seed {report.seed}). One "
              "self-contained file: images are inline, no script and no network are needed; the same images are in "
              "figures/.")
    return html.page("s2l report", lead, sections, footer)


def _model(manifest: dict) -> str:
    model = manifest.get("model")
    if isinstance(model, list):
        return f"{len(model)} checkpoints, last {model[-1]}" if model else "?"
    return str(model or "?")


def _plain(value) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def _tokens(value: float):
    """A token count: whole numbers print without decimals, others with one."""
    value = float(value)
    return html.Cell(str(int(value)) if value == int(value) else f"{value:.1f}", numeric=True)


def _params(params: dict) -> str:
    return ", ".join(f"{k}={_plain(v)}" for k, v in (params or {}).items()) or "—"


# -- 1. header ------------------------------------------------------------------------------------------------------
def run_facts(run: Run) -> list[tuple[str, object]]:
    m = run.manifest
    dataset = m.get("dataset") or {}
    training = m.get("training") or {}
    snapshots = m.get("snapshots") or []
    epochs = [s.get("epoch") for s in snapshots]
    template = m.get("template")
    revision = m.get("model_revision")
    facts = [
        ("run directory", html.mono(run.root)),
        ("kind", m.get("kind", "?")),
        ("proxy model", _model(m)),
        ("model revision", html.mono(", ".join(revision) if isinstance(revision, list) else revision or "—")),
        ("tokenizer", m.get("tokenizer", "—")),
        ("data", html.mono(dataset.get("path", "—"))),
        ("data fingerprint (sha256)", html.mono(run.data_fingerprint or "—")),
        ("format / template", f"{m.get('format', '?')} / "
                              f"{(template or {}).get('name', template) if template else '—'}"),
        ("examples (distinct)", run.n),
        ("max length / scoring dtype", f"{m.get('max_length', '?')} tokens / {m.get('dtype', '?')}"),
        ("snapshots", f"{len(snapshots)} at epochs " + ", ".join("?" if e is None else f"{e:g}" for e in epochs)),
    ]
    if training:
        facts += [
            ("training", f"{training.get('epochs', '?')} epochs, lr {training.get('learning_rate', '?')}, batch "
                         f"{training.get('batch_size', '?')}, {training.get('schedule', '?')} schedule, warm-up "
                         f"{training.get('warmup_ratio', '?')}, {training.get('optimizer', '?')}, "
                         f"{training.get('precision', '?')}, {training.get('total_steps', '?')} steps"),
            ("training seed", training.get("seed", "—")),
        ]
    else:
        facts.append(("training", "not recorded (scored from existing checkpoints)"))
    facts += [
        ("versions", f"s2l {m.get('s2l_version', '?')}, torch {m.get('torch_version', '?')}"),
        ("trajectory store fingerprint", html.mono(run.fingerprint)),
    ]
    if m.get("wall_seconds") is not None:
        facts.append(("recording time", f"{m['wall_seconds']:.0f} s"))
    return facts


def header_section(report: Report) -> str:
    parts = [html.para("Everything below comes from these inputs; the fingerprints identify the exact data and "
                       "losses."), "<h3>The proxy run</h3>", html.kv_table(run_facts(report.run), "header-run")]
    if report.selections:
        rows = []
        for s in report.selections:
            m = s.manifest
            budget = m.get("budget") or {}
            rows.append([s.name, html.mono(s.path), s.method, _params(m.get("params")), m.get("seed", "—"),
                         str(budget.get("asked", "—")), s.size, f"s2l {m.get('s2l_version', '?')}",
                         "; ".join(s.notes) or "—"])
        parts += ["<h3>Selections</h3>",
                  html.table(["name", "directory", "method", "parameters", "seed", "budget asked", "selected",
                              "made by", "note"], rows, "header-selections")]
    else:
        parts.append(html.para("No selection directories were given."))
    if report.target is not None:
        parts += ["<h3>The target run</h3>", html.kv_table(run_facts(report.target), "header-target")]
    return "".join(parts)


# -- 2. the pool ---------------------------------------------------------------------------------------------------
def pool_section(report: Report) -> str:
    run = report.run
    p = analysis.pool_summary(run)
    facts = [
        ("records in the data file", p.records if p.records is not None else "—"),
        ("distinct examples", html.cell(p.examples, key="examples")),
        ("duplicates left out", html.cell(p.duplicates, key="duplicates")),
        ("with a loss at every snapshot", html.cell(p.usable, key="usable")),
        ("truncated to the max length (kept)", html.cell(p.truncated_kept, key="truncated")),
        ("sources", len(p.sources) if p.sources is not None else "none (no source field)"),
    ]
    parts = [html.kv_table(facts, "pool-summary")]
    if p.sources is not None:
        usable_by_source = analysis.source_counts(run, run.usable)
        rows = [[name, n, html.pct(n, p.examples), usable_by_source.get(name, 0)] for name, n in p.sources.items()]
        parts += ["<h3>Sources</h3>", html.table(["source", html.Cell("examples", True), html.Cell("% of pool", True),
                                                  html.Cell("with a loss", True)], rows, "pool-sources")]
    else:
        parts.append(html.missing("the pool has no <code>source</code> field, so there is no breakdown by source "
                                  "(S2L then clusters the whole pool at once)."))
    parts.append("<h3>Excluded examples</h3>")
    if p.excluded:
        reasons = {"no_response_tokens": "no response token left after truncation: no loss, never selected",
                   "empty_response": "the record's response (output, or an assistant turn) is empty: no loss, never "
                   "trained on or selected",
                   "empty_prompt": "the record's instruction or prompt is empty: no loss, never trained on or selected",
                   "no_assistant_turn": "the conversation has no assistant turn: no loss, never trained on or selected",
                   "no_loss": "no loss at some snapshot", "duplicate (kept once, not in the run)":
                   "identical to an earlier record: kept once"}
        parts.append(html.table(["reason", html.Cell("examples", True), "meaning"],
                                [[r, n, reasons.get(r, "")] for r, n in p.excluded.items()], "pool-excluded"))
    else:
        parts.append(html.para("None: every example has a loss at every snapshot, and no record is a duplicate."))
    stats = p.length_stats
    if stats:
        parts += ["<h3>Response length</h3>",
                  html.table([html.Cell(h, True) for h in ("examples", "min", "10%", "median", "mean", "90%", "max")],
                             [[stats["n"], *[_tokens(stats[k])
                                             for k in ("min", "p10", "median", "mean", "p90", "max")]]],
                             "pool-lengths", digits=1)]
        parts.append(report.figure("pool", figures.pool_figure(p.sources, p.lengths, run.manifest.get("max_length")
                                                               if p.truncated_kept else None),
                                   "Examples per source and the response-length histogram",
                                   "Left: examples per source. Right: loss-carrying response tokens per example "
                                   "(the prompt is masked), for the examples with a loss."))
    else:
        parts.append(html.missing("no example has a loss, so there is no length distribution to show."))
    return "".join(parts)


# -- 3. trajectories ----------------------------------------------------------------------------------------------
def trajectories_section(report: Report) -> str:
    run = report.run
    found = analysis.find_clusters(run, report.selections, report.clusters, report.seed)
    if isinstance(found, str):
        return html.missing(found + ".")
    t = run.trajectories
    x, x_label = analysis.snapshot_axis(t.snapshots, t.losses.shape[1])
    selection = found.selection
    parts = [html.para(f"Clusters: {html.esc(found.origin)}. {len(found.sizes)} clusters over "
                       f"{sum(found.sizes.values())} examples. Each line is a cluster's mean loss at every snapshot "
                       f"(x: {html.esc(x_label)}; {html.esc(x[0]) if len(x) else ''} is the untrained base model); "
                       "examples whose losses move alike share a cluster, and S2L samples every cluster evenly.")]
    parts += [html.note(html.esc(w)) for w in found.warnings]
    rows = []
    ordered = [c for members in found.groups.values() for c in members]
    for c in ordered[:MAX_CLUSTER_ROWS]:
        members = found.labels == c
        mean = t.losses[members].mean(axis=0)
        row = [found.group_of[c], f"c{c}", found.sizes[c]]
        if selection is not None:
            row.append(int(selection.selected[members].sum()))
        rows.append(row + [mean[0], mean[-1], mean[0] - mean[-1]])
    header = ["source" if list(found.groups) != ["pool"] else "group", "cluster", html.Cell("examples", True)]
    if selection is not None:
        header.append(html.Cell(f"selected by {selection.name}", True))
    unit = x_label.split()[0]
    header += [html.Cell(f"mean loss at {unit} {x[0]:g}", True), html.Cell(f"at {unit} {x[-1]:g}", True),
               html.Cell("drop", True)]
    parts.append(html.table(header, rows, "trajectories-clusters"))
    if len(ordered) > MAX_CLUSTER_ROWS:
        parts.append(html.para(f"The {MAX_CLUSTER_ROWS} largest clusters are listed (largest source first); "
                               f"{len(ordered) - MAX_CLUSTER_ROWS} smaller ones are not."))
    losses = t.losses
    parts.append(report.figure("trajectories-clusters",
                               figures.cluster_means_figure(losses, x, x_label, found,
                                                            None if selection is None else selection.selected),
                               "Mean loss trajectory of each cluster",
                               f"One panel per {'source' if list(found.groups) != ['pool'] else 'pool'}; at most "
                               f"{figures.MAX_CLUSTER_LINES} clusters (the largest) per panel, at most "
                               f"{figures.MAX_SAMPLE_PANELS} panels."))
    png, panels = figures.cluster_samples_figure(losses, x, x_label, found, report.seed)
    parts.append(report.figure("trajectories-samples", png, "A sample of individual loss curves per cluster",
                               f"{len(panels)} clusters, up to {figures.CURVES_PER_PANEL} randomly chosen members each "
                               f"(seed {report.seed}); the y axis is shared and trimmed to the central 99% of the "
                               "values drawn."))
    return "".join(parts)


# -- 4. learning percentage -----------------------------------------------------------------------------------------
def lp_cuts(report: Report, lp: analysis.LP) -> list[tuple[Selection, float, int]]:
    """(selection, largest LP(1) it kept, how many it kept with an LP) for each lp selection."""
    cuts = []
    for s in report.selections:
        if s.method == "lp":
            kept = lp.values[s.selected & np.isfinite(lp.values)]
            if len(kept):
                cuts.append((s, float(kept.max()), len(kept)))
    return cuts


def lp_section(report: Report, lp: analysis.LP | str) -> str:
    if isinstance(lp, str):
        return html.missing("learning percentage cannot be computed for this run: " + html.esc(lp))
    values = lp.values[np.isfinite(lp.values)]
    if len(values) == 0:
        return html.missing("no example has a finite LP(1) (" + html.esc(", ".join(f"{k}: {v}" for k, v in
                                                                            lp.excluded.items())) + ").")
    columns = lp.columns
    snaps = report.run.trajectories.snapshots
    parts = [html.para(f"LP(1) = (P0 − P1) / (P0 − Pn), the share of all the learning on an example that happened "
                       f"in epoch 1 (P: perplexity of the response; P0 the base model, P1 after epoch "
                       f"{snaps[columns['p_epoch']].get('epoch'):g}, Pn after epoch "
                       f"{snaps[columns['p_n']].get('epoch'):g}). Low LP: learnt late, hard; the lp method keeps "
                       "the lowest. LP outside [0, 1] means the loss went up during training, or rose again after "
                       "epoch 1.")]
    n_excluded = sum(lp.excluded.values())
    facts = [("examples with an LP(1)", html.cell(len(values), key="lp-n")),
             ("below 0", html.cell(lp.below, key="lp-below")),
             ("in [0, 1]", html.cell(lp.within, key="lp-within")),
             ("above 1", html.cell(lp.above, key="lp-above")),
             ("excluded (no LP)", html.cell(n_excluded, key="lp-excluded"))]
    facts += [(f"  excluded: {reason}", n) for reason, n in lp.excluded.items()]
    s = lp.stats
    facts += [("min / 10% / median / 90% / max",
               " / ".join(f"{s[k]:.3f}" for k in ("min", "p10", "median", "p90", "max")))]
    parts.append(html.kv_table(facts, "lp-summary"))
    cuts = lp_cuts(report, lp)
    if cuts:
        lines = [(f"{c[0].name}: largest kept {c[1]:.3f}", c[1]) for c in cuts[:4]]
        overlay = (cuts[0][0].name, lp.values[cuts[0][0].selected])
        rows = [[sel.name, sel.size, n, at, int((values <= at).sum()),
                 "yes" if (sel.manifest.get("params") or {}).get("diversity") else "no"] for sel, at, n in cuts]
        parts.append(html.table(["lp selection", html.Cell("selected", True), html.Cell("with an LP here", True),
                                 html.Cell("largest LP(1) kept", True), html.Cell("pool examples at or below it", True),
                                 "diversity layer"], rows, "lp-cuts"))
        if any((c[0].manifest.get("params") or {}).get("diversity") for c in cuts):
            parts.append(html.para("With the diversity layer the cut is made inside each embedding cluster, so some "
                                   "examples below the line are not kept; the line marks the largest LP(1) kept."))
    else:
        at = float(np.quantile(values, LP_QUANTILE))
        lines = [(f"{LP_QUANTILE:.0%} quantile: {at:.3f}", at)]
        overlay = None
        parts.append(html.note(f"No lp selection was given: the dashed line marks the {LP_QUANTILE:.0%} quantile of "
                               f"LP(1) ({at:.3f}), where a {LP_QUANTILE:.0%} lp selection without the diversity layer "
                               "would cut."))
    parts.append(report.figure("learning-percentage", figures.lp_figure(lp, lines, overlay),
                               "Histogram of LP(1) with the selection's cut",
                               "Grey: every example with an LP(1); values beyond the axis are counted in its edge "
                               "bins. Shaded: outside [0, 1]."))
    return "".join(parts)


# -- 5. data map ---------------------------------------------------------------------------------------------------
def data_map_section(report: Report) -> str:
    dm = analysis.data_map(report.run)
    if isinstance(dm, str):
        return html.missing(html.esc(dm) + ".")
    ok = np.isfinite(dm.confidence)
    parts = [html.para("Dataset cartography on the proxy's trained snapshots: an example's confidence is the mean of "
                       "exp(−loss) (the geometric-mean token probability), its variability the standard deviation. "
                       "Top left: easy to learn; bottom left: hard; right: ambiguous (the proxy changed its mind).")]
    rows = [["pool", int(ok.sum()), float(np.mean(dm.confidence[ok])), float(np.mean(dm.variability[ok]))]]
    for s in report.selections:
        m = ok & s.selected
        rows.append([s.name, int(m.sum()), float(np.mean(dm.confidence[m])) if m.any() else None,
                     float(np.mean(dm.variability[m])) if m.any() else None])
    parts.append(html.table(["examples", html.Cell("n", True), html.Cell("mean confidence", True),
                             html.Cell("mean variability", True)], rows, "data-map-summary"))
    panels = [(s.name, s.selected) for s in report.selections]
    if len(panels) > figures.MAX_MAP_PANELS:
        parts.append(html.para(f"The first {figures.MAX_MAP_PANELS} selections are drawn."))
    sources = None if report.run.trajectories.sources is None else analysis.source_names(report.run)
    caption = ("Grey: the pool; coloured: the examples each selection kept." if panels else
               "No selection was given: the points are coloured by source.")
    parts.append(report.figure("data-map", figures.data_map_figure(dm, panels, sources), "Data map: confidence vs "
                               "variability", caption, narrow=not panels))
    return "".join(parts)


# -- 6. each selection against the pool ---------------------------------------------------------------------------
def selections_section(report: Report, lp: analysis.LP | str) -> str:
    if not report.selections:
        return html.missing("no selection directories were given. Make some with <code>s2l select</code> and pass them "
                            "to the report to compare what each method kept.")
    run = report.run
    usable = run.usable
    lengths = np.asarray(run.trajectories.n_tokens, dtype=float)
    final = analysis.final_losses(run)
    lp_values = None if isinstance(lp, str) else lp.values
    pool_row = ["pool", "—", "—", int(usable.sum()), html.pct(1, 1), _tokens(np.median(lengths[usable])),
                float(np.median(final[usable])), None if lp_values is None else float(np.nanmedian(lp_values)), "—"]
    rows = [pool_row]
    for s in report.selections:
        m = s.selected & usable
        excluded = s.manifest.get("excluded") or {}
        rows.append([s.name, s.method, str((s.manifest.get("budget") or {}).get("asked", "—")), html.cell(s.size),
                     html.pct(s.size, int(usable.sum())),
                     _tokens(np.median(lengths[m])) if m.any() else None,
                     float(np.median(final[m])) if m.any() else None,
                     float(np.nanmedian(lp_values[m])) if lp_values is not None and np.isfinite(lp_values[m]).any()
                     else None,
                     ", ".join(f"{k}: {v}" for k, v in excluded.items()) or "none"])
    parts = [html.para("Each selection's size, and how its examples differ from the pool's: medians of the "
                       "response length, of the proxy's final-snapshot loss and of LP(1); and what the method could "
                       "not select."),
             html.table(["selection", "method", "budget asked", html.Cell("selected", True),
                         html.Cell("% of usable", True), html.Cell("median tokens", True),
                         html.Cell("median final loss", True), html.Cell("median LP(1)", True),
                         "excluded by the method"], rows, "selections-summary")]
    has_sources = run.trajectories.sources is not None
    pool_sources = analysis.source_counts(run, usable) if has_sources else None
    if not has_sources:
        parts.append(html.missing("the pool has no sources, so the source mix is not compared."))
    for k, s in enumerate(report.selections, start=1):
        parts.append(f'<h3 id="selection-{k}">{html.esc(s.name)} <span class="lead">({html.esc(s.method)}, '
                     f'{s.size} examples)</span></h3>')
        parts += [html.note(html.esc(n)) for n in s.notes]
        warnings = s.manifest.get("warnings") or []
        if warnings:
            parts.append(html.para("Warnings when it was made: " + html.esc(" ".join(warnings))))
        chosen_sources = analysis.source_counts(run, s.selected) if has_sources else None
        if has_sources:
            total = max(1, sum(pool_sources.values()))
            rows = [[name, n, html.pct(n, total), chosen_sources.get(name, 0),
                     html.pct(chosen_sources.get(name, 0), s.size)] for name, n in pool_sources.items()]
            parts.append(html.table(["source", html.Cell("pool", True), html.Cell("pool %", True),
                                     html.Cell("selected", True), html.Cell("selected %", True)], rows,
                                    f"selection-{k}-sources"))
        if s.selected[usable].any():
            parts.append(report.figure(f"selection-{k}-{s.name}",
                                       figures.selection_figure(s.name, pool_sources, chosen_sources, lengths, final,
                                                                s.selected, usable),
                                       f"{s.name} against the pool: source mix, length and final loss",
                                       "Grey: the pool (examples with a loss); blue: the selection. The histograms "
                                       "are densities, so their shapes compare directly."))
        else:
            parts.append(html.missing("none of its examples has a loss in this run."))
    return "".join(parts)


# -- 7. overlap --------------------------------------------------------------------------------------------------------
def overlap_section(report: Report) -> str:
    selections = report.selections
    if len(selections) < 2:
        return html.missing(f"overlap needs at least two selections; {len(selections)} "
                            f"{'was' if len(selections) == 1 else 'were'} given.")
    jac, inter = analysis.overlap_matrix(selections)
    names = [s.name for s in selections]
    parts = [html.para("Jaccard overlap |A∩B| / |A∪B| of the selected ids: 1 is the same subset, 0 disjoint. Two "
                       "random subsets of fractions a and b of a pool overlap by about ab / (a + b − ab).")]
    parts.append(html.table(["", *[html.Cell(n, True) for n in names]],
                            [[n, *[html.Cell(f"{jac[i, j]:.3f}", True, key=f"jaccard-{i}-{j}")
                                   for j in range(len(names))]] for i, n in enumerate(names)], "overlap-jaccard"))
    parts.append(html.para("Examples in both (the diagonal: each selection's size):"))
    parts.append(html.table(["", *[html.Cell(n, True) for n in names]],
                            [[n, *[int(inter[i, j]) for j in range(len(names))]] for i, n in enumerate(names)],
                            "overlap-counts"))
    parts.append(report.figure("overlap", figures.overlap_figure(names, jac),
                               "Heat map of the pairwise Jaccard overlap", narrow=True))
    return "".join(parts)


# -- 8. agreement --------------------------------------------------------------------------------------------------
def agreement_section(report: Report, lp: analysis.LP | str) -> str:
    if report.target is None:
        return html.missing("no target run was given. Record a larger model over the same pool with the same command "
                            "and pass it as the target run to see whether the proxy ranks examples as the target does.")
    ag = analysis.agreement(report.run, report.target, lp)
    proxy, target = _model(report.run.manifest), _model(report.target.manifest)
    parts = [html.para(f"Do the proxy ({html.esc(proxy)}) and the target ({html.esc(target)}) rank the examples alike? "
                       "Spearman's rank correlation over the examples both can score; the LP paper reports 0.79 "
                       "between OPT-350M and OPT-13B on Alpaca.")]
    parts += [html.note(html.esc(n)) for n in ag.notes]
    facts = [("examples in both runs", html.cell(ag.n_common, key="agreement-common")),
             ("final loss: examples compared", html.cell(len(ag.loss_pairs[0]), key="agreement-loss-n")),
             ("final loss: Spearman ρ", html.Cell(html.num(ag.loss_rho, 4), True, key="agreement-loss-rho"))]
    if ag.lp_pairs is not None:
        facts += [("LP(1): examples compared", html.cell(len(ag.lp_pairs[0]), key="agreement-lp-n")),
                  ("LP(1): Spearman ρ", html.Cell(html.num(ag.lp_rho, 4), True, key="agreement-lp-rho"))]
    parts.append(html.kv_table(facts, "agreement-summary"))
    if ag.lp_missing:
        parts.append(html.missing(html.esc(ag.lp_missing)))
    if len(ag.loss_pairs[0]):
        parts.append(report.figure("agreement", figures.agreement_figure(ag, proxy, target),
                                   "Scatter plots of proxy vs target final loss and LP(1)",
                                   "One point per example. The two models' losses need not share a scale: "
                                   "what matters is whether they order the examples alike. LP values beyond an "
                                   "axis's central range are drawn at its edge."))
    else:
        parts.append(html.missing("no example has a loss in both runs."))
    return "".join(parts)

"""The HTML report: its sections hold the numbers of its inputs, computed here independently; it is one
self-contained file; bad input is refused by name; it renders in a real headless browser."""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import time
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from s2l.data import load_pool
from s2l.errors import InputError
from s2l.report import SECTIONS, build_report
from s2l.selection.run import run_selection
from s2l.trajectories.store import TrajectoryStore

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# -- reading the report back -------------------------------------------------------------------------------------
class Parsed(HTMLParser):
    """Sections' text, tables' cell texts, `data-key` cells and image sources of a report."""

    def __init__(self, text: str):
        super().__init__()
        self.sections: dict[str, list[str]] = {}
        self.tables: dict[str, list[list[str]]] = {}
        self.keys: dict[str, str] = {}
        self.images: list[str] = []
        self.tags: Counter = Counter()
        self._section = self._table = self._key = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags[tag] += 1
        if tag == "section":
            self._section = attrs["id"]
            self.sections[self._section] = []
        elif tag == "table" and attrs.get("id"):
            self._table = attrs["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
            self._key = attrs.get("data-key")
        elif tag == "img":
            self.images.append(attrs.get("src", ""))

    def handle_endtag(self, tag):
        if tag == "section":
            self._section = None
        elif tag == "table":
            self._table = None
        elif tag == "tr" and self._row is not None:
            self.tables[self._table].append(self._row)
            self._row = None
        elif tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell).strip()
            self._row.append(text)
            if self._key:
                self.keys[self._key] = text
            self._cell = self._key = None

    def handle_data(self, data):
        if self._section:
            self.sections[self._section].append(data)
        if self._cell is not None:
            self._cell.append(data)

    def text(self, section: str) -> str:
        return " ".join("".join(self.sections[section]).split())

    def rows(self, table: str) -> list[list[str]]:
        return self.tables[table][1:]  # without the header


# -- inputs made for the tests ------------------------------------------------------------------------------------
def rewrite_losses(root: Path, losses: np.ndarray, excluded_rows=()) -> None:
    """Replace a run's losses (every cell, markers again last) and mark some examples as having no response token."""
    store = TrajectoryStore(root)
    manifest = store.manifest
    examples = store.read_examples()
    n_tokens = examples.column("n_tokens").to_numpy().copy()
    excluded = examples.column("excluded").to_pylist()
    for r in excluded_rows:
        n_tokens[r], excluded[r] = 0, "no_response_tokens"
        losses[r] = np.nan
    examples = examples.set_column(examples.column_names.index("n_tokens"), "n_tokens", pa.array(n_tokens, pa.int32()))
    examples = examples.set_column(examples.column_names.index("excluded"), "excluded", pa.array(excluded, pa.string()))
    store.write_examples(examples)
    ids = examples.column("example_id").to_pylist()
    size = manifest["shard_size"]
    for k in range(losses.shape[1]):
        for s in range(manifest["n_shards"]):
            rows = slice(s * size, (s + 1) * size)
            store.write_cell(k, s, ids[rows], losses[rows, k], n_tokens[rows])
    manifest["excluded"]["no_response_tokens"] = len(excluded_rows)
    store.write_manifest(manifest)


def synthetic_run(root: Path, pool_path: Path, losses: np.ndarray, epochs: list, with_sources: bool = True) -> Path:
    """A run directory written straight through the store, over a real pool's ids."""
    pool = load_pool(pool_path)
    ids = pool.ids
    store = TrajectoryStore(root)
    root.mkdir(parents=True)
    store.write_manifest({
        "kind": "score", "s2l_version": "test", "dataset": {"path": str(pool_path), "fingerprint": pool.fingerprint,
                                                            "records": len(pool.records), "examples": len(ids)},
        "dataset_fingerprint": pool.fingerprint, "format": pool.format, "id_column": None, "model": "synthetic",
        "max_length": 512, "shard_size": 4096, "n_examples": len(ids), "n_shards": 1,
        "excluded": {"duplicate": 0, "no_response_tokens": 0, "truncated_kept": 0}, "training": None,
        "snapshots": [{"step": k, "epoch": e, "epoch_end": e is not None and e == int(e), "label": f"s{k}"}
                      for k, e in enumerate(epochs)]})
    n_tokens = np.full(len(ids), 20, dtype=np.int32)
    store.write_examples(pa.table({
        "example_id": pa.array(ids, pa.string()),
        "source": pa.array([e.source if with_sources else None for e in pool.examples], pa.string()),
        "n_tokens": pa.array(n_tokens), "truncated": pa.array([False] * len(ids)),
        "excluded": pa.array([None] * len(ids), pa.string())}))
    for k in range(losses.shape[1]):
        store.write_cell(k, 0, ids, losses[:, k], n_tokens)
    return root


def epoch_column(snapshots: list[dict], epoch: float) -> int:
    return max(i for i, s in enumerate(snapshots) if s["epoch"] == epoch)


def lp_by_hand(losses: np.ndarray, snapshots: list[dict]) -> np.ndarray:
    """LP(1) = (P0 - P1) / (P0 - Pn) from perplexities, NaN where it has none."""
    last = max(s["epoch"] for s in snapshots if s["epoch"] == int(s["epoch"]))
    p = np.exp(losses)
    p0, p1, pn = (p[:, epoch_column(snapshots, e)] for e in (0.0, 1.0, last))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((p0 - pn) != 0, (p0 - p1) / (p0 - pn), np.nan)


@pytest.fixture(scope="module")
def runs(tiny_run, tmp_path_factory):
    """The tiny run with a few examples edited into LP's tails and one without response tokens, and a
    'target' run over the same pool whose losses are a noisy transform of the proxy's."""
    folder = tmp_path_factory.mktemp("report-runs")
    proxy, target = folder / "proxy", folder / "target"
    shutil.copytree(tiny_run.root, proxy)
    t = TrajectoryStore(proxy).load()
    snapshots = t.snapshots
    c0, c1, cn = (epoch_column(snapshots, e) for e in (0.0, 1.0, 2.0))
    losses = t.losses.copy()
    for r, up in ((1, 0.3), (2, 0.2)):  # the loss goes up in epoch 1: LP < 0 (distinct values: no ties)
        losses[r, c1], losses[r, cn] = losses[r, c0] + up, losses[r, c0] - 0.5
    losses[3, c1], losses[3, cn] = losses[3, c0] - 1.0, losses[3, c0] - 0.4  # overshoots, then back: LP > 1
    losses[4, cn] = losses[4, c0]  # no learning overall: LP has no denominator
    rewrite_losses(proxy, losses, excluded_rows=[0])
    shutil.copytree(proxy, target)
    rng = np.random.default_rng(1)
    clean = TrajectoryStore(proxy).load().losses
    rewrite_losses(target, 0.7 * clean + 0.05 * rng.standard_normal(clean.shape), excluded_rows=[0])
    TrajectoryStore(target).update_manifest(model="tiny-target")
    return proxy, target


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    proxy, target = runs
    folder = tmp_path_factory.mktemp("report")
    selections = [
        run_selection(proxy, None, "s2l", 0.25, folder / "s2l", params={"n_clusters": 2}).out,
        run_selection(proxy, None, "lp", 0.25, folder / "lp", params={"diversity": False}).out,
        run_selection(proxy, None, "random", 10, folder / "random", seed=3).out,
    ]
    started = time.perf_counter()
    path = build_report(proxy, selections, out=folder / "out", target_run=target, seed=0)
    print(f"report built in {time.perf_counter() - started:.1f}s")
    return path, selections


def ids_of(selection: Path) -> set[str]:
    return set((selection / "selected_ids.txt").read_text().split())


# -- content --------------------------------------------------------------------------------------------------------
def test_sections_hold_the_inputs_numbers(report, runs, math_pool):
    path, selections = report
    proxy, target = runs
    html = Parsed(path.read_text(encoding="utf-8"))
    assert list(html.sections) == list(SECTIONS)

    # Header: what made the run and each selection.
    manifest = json.loads((proxy / "manifest.json").read_text())
    header = html.text("header")
    assert manifest["dataset_fingerprint"] in header and TrajectoryStore(proxy).fingerprint() in header
    assert str(manifest["model"]) in header and "tiny-target" in header
    heads = html.rows("header-selections")
    assert [r[2] for r in heads] == ["s2l", "lp", "random"] and [r[4] for r in heads] == ["0", "0", "3"]

    # The pool, against the pool file read here.
    records = [json.loads(line) for line in math_pool.read_text().splitlines() if line.strip()]
    assert html.keys["examples"] == str(len(records)) == "40"
    assert html.keys["usable"] == "39"
    assert {r[0]: int(r[1]) for r in html.rows("pool-sources")} == dict(Counter(r["source"] for r in records))
    assert {r[0]: int(r[1]) for r in html.rows("pool-excluded")} == {"no_response_tokens": 1}

    # Trajectories: the s2l selection's clusters, every usable example in one, its picks counted.
    clusters = html.rows("trajectories-clusters")
    assert "clusters of the selection s2l" in html.text("trajectories")
    assert sum(int(r[2]) for r in clusters) == 39
    assert sum(int(r[3]) for r in clusters) == len(ids_of(selections[0]))

    # Learning percentage: the tails counted by hand from perplexities.
    t = TrajectoryStore(proxy).load()
    lp = lp_by_hand(t.losses, t.snapshots)
    finite = np.isfinite(lp)
    assert html.keys["lp-below"] == str(int((lp[finite] < 0).sum())) and int(html.keys["lp-below"]) >= 2
    assert html.keys["lp-above"] == str(int((lp[finite] > 1).sum())) and int(html.keys["lp-above"]) >= 1
    assert html.keys["lp-excluded"] == str(int((~finite).sum())) == "2"  # no tokens, zero denominator
    lp_selected = np.isin(t.ids, list(ids_of(selections[1])))
    (cut,) = html.rows("lp-cuts")
    assert cut[0] == "lp" and abs(float(cut[3]) - lp[lp_selected].max()) < 6e-4

    # Each selection: its size; its source mix against the pool's.
    sizes = {r[0]: int(r[3]) for r in html.rows("selections-summary")}
    assert sizes == {"pool": 39, "s2l": 10, "lp": 10, "random": 10}
    assert all(sizes[s.name] == len(ids_of(s)) for s in selections)
    source_of = dict(zip(t.ids, t.sources))
    for k, selection in enumerate(selections, start=1):
        mix = {r[0]: int(r[3]) for r in html.rows(f"selection-{k}-sources")}
        assert mix == {s: n for s, n in Counter(source_of[i] for i in ids_of(selection)).items()} | \
            {s: 0 for s in set(t.sources) - {source_of[i] for i in ids_of(selection)}}

    # Overlap: Jaccard of the id sets.
    for i, a in enumerate(selections):
        for j, b in enumerate(selections):
            expected = len(ids_of(a) & ids_of(b)) / len(ids_of(a) | ids_of(b))
            assert abs(float(html.keys[f"jaccard-{i}-{j}"]) - expected) < 6e-4

    # Proxy -> target: Spearman's rho from scipy on the examples both can score.
    from scipy.stats import spearmanr

    tt = TrajectoryStore(target).load()
    both = t.usable & tt.usable
    assert html.keys["agreement-common"] == "40" and html.keys["agreement-loss-n"] == "39"
    rho = spearmanr(t.losses[both, -1], tt.losses[both, -1]).statistic
    assert abs(float(html.keys["agreement-loss-rho"]) - rho) < 6e-5
    lp_target = lp_by_hand(tt.losses, tt.snapshots)
    ok = np.isfinite(lp) & np.isfinite(lp_target)
    assert html.keys["agreement-lp-n"] == str(int(ok.sum()))
    assert abs(float(html.keys["agreement-lp-rho"]) - spearmanr(lp[ok], lp_target[ok]).statistic) < 6e-5


def test_the_file_is_self_contained_and_the_figures_are_its_images(report):
    path, _ = report
    text = path.read_text(encoding="utf-8")
    html = Parsed(text)
    for needle in ("http:", "https:", "<script", "<link", "url(", "@import", "file://"):
        assert needle not in text.lower(), needle
    assert text.count("src=") == text.count('src="data:image/png;base64,') > 0
    assert html.tags["script"] == html.tags["iframe"] == html.tags["object"] == 0
    figures = sorted((path.parent / "figures").glob("*.png"))
    assert len(html.images) == len(figures) >= 9  # pool, 2 trajectories, LP, map, 3 selections, overlap, agreement
    embedded = set()
    for src in html.images:
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data.startswith(PNG_SIGNATURE)
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            assert image.width >= 400 and image.height >= 250
            assert len(np.unique(np.asarray(image.convert("L")))) > 10  # drawn on, not blank
        embedded.add(data)
    assert embedded == {f.read_bytes() for f in figures}
    assert not list(path.parent.parent.glob(".out.*"))  # no temporary folder left beside it


def test_missing_inputs_say_what_is_missing(math_pool, tmp_path):
    """One snapshot, no sources, no selection, no target: every section says what it lacks."""
    n = len(load_pool(math_pool).ids)
    run = synthetic_run(tmp_path / "run", math_pool, np.linspace(1.0, 2.0, n)[:, None], [None], with_sources=False)
    path = build_report(run, [], out=tmp_path / "report")
    html = Parsed(path.read_text(encoding="utf-8"))
    assert list(html.sections) == list(SECTIONS)
    for section in ("trajectories", "learning-percentage", "data-map", "selections", "overlap", "agreement"):
        assert "Not shown:" in html.text(section), section
    assert "single snapshot" in html.text("trajectories")
    assert "epoch" in html.text("learning-percentage")
    assert "no source field" in html.text("pool") and "pool-sources" not in html.tables
    assert html.keys["examples"] == str(n)
    assert len(html.images) == len(list((path.parent / "figures").glob("*.png"))) == 1  # the length histogram


def test_a_selection_from_another_pool_is_refused_by_name(runs, tmp_path):
    other_pool = tmp_path / "other.jsonl"
    other_pool.write_text("".join(json.dumps({"instruction": f"What is {i} + {i}?", "output": f"#### {2 * i}",
                                              "source": "doubles"}) + "\n" for i in range(6)))
    losses = np.column_stack([np.full(6, 2.0), np.linspace(1.0, 1.5, 6), np.linspace(0.5, 0.9, 6)])
    other_run = synthetic_run(tmp_path / "other-run", other_pool, losses, [0.0, 1.0, 2.0])
    foreign = run_selection(other_run, None, "random", 3, tmp_path / "foreign").out
    with pytest.raises(InputError) as caught:
        build_report(runs[0], [foreign], out=tmp_path / "report")
    assert str(foreign) in str(caught.value) and "different pool" in str(caught.value)
    assert not (tmp_path / "report").exists()

    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a previous report"):
        build_report(runs[0], [], out=tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


# -- a real browser --------------------------------------------------------------------------------------------------
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_headless_chromium_renders_it_without_overflow(report, tmp_path):
    """Debian's chromium draws the page at a laptop's width: a varied picture (not one colour), and nothing
    wider than the window (the rightmost columns are the page's margin, all one colour)."""
    from PIL import Image

    path, _ = report
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1024,3000", path.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    with Image.open(shot) as image:
        image = image.convert("RGB")
        assert image.size == (1024, 3000)
        colours = image.getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 50
        right = image.crop((image.width - 12, 0, image.width, image.height))
        assert len(right.getcolors()) == 1, "something reaches the right edge of the window"

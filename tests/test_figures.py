"""The report's pictures: the Pareto front, the forest plot's intervals, colours keyed by method name, and
report.html holding every table of report.md (and, slow, rendering in a real headless browser)."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

import peft_glue.results.curves as curves_module
import peft_glue.results.tradeoff as tradeoff_module
from peft_glue.report import main, write_report
from peft_glue.results.comparison import compare_pairs, pairs_table, pct
from peft_glue.results.forest import differences_to
from peft_glue.results.palette import PALETTE, method_color
from peft_glue.results.runs import load_runs
from peft_glue.results.tradeoff import pareto_front

ORDER = {"full": 0, "bitfit": 1, "lora": 2, "ia3": 13, "vera": 8}
PARAMS = {"full": 22_713_986, "bitfit": 52_226, "lora": 37_634, "ia3": 30_722, "vera": 9_218}
TEST_ACC = {
    "full": 0.84,
    "bitfit": 0.80,
    "lora": 0.78,
    "ia3": 0.81,
    "vera": 0.76,
}  # seed 1; + seed/100 - 1/100


def write_run(root: Path, method: str, seed: int, *, lr: float = 1e-3, curves: bool = False) -> None:
    """A completed MRPC run with validation carved from train: a test score, trainable parameters, memory
    and throughput; ``curves`` adds a metrics.csv whose values depend on the method and the seed."""
    test = TEST_ACC[method] + (seed - 1) / 100 + (0.004 * seed**2 if method == "lora" else 0.0)
    record = {
        "status": "completed", "task": "mrpc", "model": "minilm", "seed": seed,
        "method": {"name": method}, "method_info": {"order": ORDER[method]},
        "task_info": {"monitor": "accuracy"}, "optimizer": {"lr": lr}, "batch_size": 16, "max_epochs": 2,
        "train_subset": None, "validation_size": 0.1, "trainable_params": PARAMS[method],
        "val": {"best": {"accuracy": test + 0.01}, "last": {"accuracy": test}},
        "test": {"accuracy": test}, "peak_memory_mb": 1000 + PARAMS[method] / 10_000,
        "train_samples_per_second": 40.0 + ORDER[method],
    }  # fmt: skip
    folder = root / f"{method}_lr{lr:g}_seed{seed}"
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps(record))
    if curves:
        rows = ["epoch,step,train/loss,val/accuracy"]
        for epoch in (0, 1):
            rows += [f"{epoch},{10 * epoch + step},{1.0 - 0.1 * seed - 0.01 * step}," for step in range(10)]
            rows.append(f"{epoch},{10 * epoch + 9},,{test - 0.05 * (1 - epoch)}")
        (folder / "metrics.csv").write_text("\n".join(rows) + "\n")


def write_sweep(root: Path, methods: list[str], seeds=(1, 2, 3), curves: bool = False) -> Path:
    for method in methods:
        for seed in seeds:
            write_run(root, method, seed, curves=curves)
    return root


# --- the Pareto front ---------------------------------------------------------------------------------


def test_pareto_front_holds_the_undominated_methods_only():
    #          cheap+good  dear+best  dominated by 0   dominated by 1 (same score, dearer)   no cost
    costs = [10.0, 1000.0, 50.0, 5000.0, float("nan"), 10.0]
    scores = [0.80, 0.85, 0.78, 0.85, 0.99, 0.70]  # the last: same cost as 0, lower score
    assert pareto_front(costs, scores) == [0, 1]
    # throughput: more is better, so the front runs from the fastest; 2 is slower and worse than 0
    speeds, scores = [50.0, 10.0, 40.0, 10.0], [0.80, 0.85, 0.78, 0.85]
    assert pareto_front(speeds, scores, lower_cost_is_better=False) == [0, 1, 3]  # 1 and 3 tie
    assert pareto_front([1.0, 1.0], [0.5, 0.5]) == [0, 1]  # a tie dominates neither


def test_the_report_names_the_front_and_leaves_a_dominated_method_off(tmp_path):
    """lora (37,634 parameters, 78%) is beaten by ia3 (30,722, 81%), cheaper and better: not on the front."""
    root = write_sweep(tmp_path / "runs", ["full", "bitfit", "lora", "ia3", "vera"])
    report = write_report([root], tmp_path / "report", aso_iterations=0).read_text()
    section = report.split("## Trade-offs")[1].split("\n## ")[0]
    assert "](tradeoff_mrpc.png)" in section and (tmp_path / "report" / "tradeoff_mrpc.png").is_file()
    assert "Pareto front against trainable parameters: vera, ia3, full." in section
    assert report.index("## Trade-offs") < report.index("## Methods × tasks")  # the first figure


# --- the forest plot ---------------------------------------------------------------------------------


def picked_config(label: str, order: int, scores: dict[int, float]) -> dict:
    return {
        "label": label,
        "order": order,
        "context": "mrpc",
        "first": {"method.name": label},
        "score": scores,
    }


def table_intervals(lines: list[str]) -> dict[str, tuple[float, float]]:
    """``A vs B`` -> the 95% interval of A − B, as printed in the pairs table."""
    header, _, *rows = [line for line in "\n".join(lines).splitlines() if line.startswith("| ")]
    titles = [cell.strip() for cell in header.strip("| ").split(" | ")]
    found = {}
    for row in rows:
        cells = dict(zip(titles, [cell.strip() for cell in row.strip("| ").split(" | ")], strict=True))
        low, high = cells["95% CI"].strip("[]").split(", ")
        found[cells["A vs B"]] = (low, high)
    return found


@pytest.mark.parametrize("baseline", ["full", "bitfit", "lora"])  # first (A), middle, last (B) in the pairs
def test_forest_intervals_are_the_pairs_tables(baseline):
    picked = [
        picked_config("full", 0, {1: 0.84, 2: 0.86, 3: 0.83, 4: 0.88}),
        picked_config("bitfit", 1, {1: 0.80, 2: 0.84, 3: 0.81, 4: 0.80}),
        picked_config("lora", 2, {1: 0.78, 2: 0.79, 3: 0.75, 4: 0.81}),
    ]
    pairs = compare_pairs(picked)
    printed = table_intervals(pairs_table(pairs, "accuracy", 95, aso_iterations=0))
    differences = differences_to(pairs, baseline)
    assert sorted(d.label for d in differences) == sorted(
        c["label"] for c in picked if c["label"] != baseline
    )
    assert [d.mean for d in differences] == sorted((d.mean for d in differences), reverse=True)
    for diff in differences:
        if f"{baseline} vs {diff.label}" in printed:  # printed as baseline − method: negated, ends swapped
            assert printed[f"{baseline} vs {diff.label}"] == (pct(-diff.high), pct(-diff.low))
        else:
            assert printed[f"{diff.label} vs {baseline}"] == (pct(diff.low), pct(diff.high))
        assert diff.low < diff.mean < diff.high


def test_a_baseline_named_by_a_label_is_that_configuration_alone():
    """``--baseline lora`` beside a ``lora from mrpc`` configuration (init_from) is the plain one: the exact
    label wins over the method's name, which both configurations share."""
    picked = [
        picked_config("lora", 0, {1: 0.56, 2: 0.55, 3: 0.56, 4: 0.57}),
        picked_config("lora from mrpc", 1, {1: 0.60, 2: 0.59, 3: 0.59, 4: 0.62}),
    ]
    picked[1]["first"]["method.name"] = "lora"
    differences = differences_to(compare_pairs(picked), "lora")
    assert [(d.label, round(d.mean, 4)) for d in differences] == [("lora from mrpc", 0.04)]


def test_forest_plot_in_the_report_and_an_unknown_baseline_is_one_line(tmp_path, capsys):
    root = write_sweep(tmp_path / "runs", ["full", "bitfit", "lora"])
    report = write_report([root], tmp_path / "a", aso_iterations=0).read_text()
    assert "](forest_mrpc.png)" in report and (tmp_path / "a" / "forest_mrpc.png").is_file()
    main([str(root), "--out", str(tmp_path / "b"), "--aso-iterations", "0", "--baseline", "lora"])
    assert "mrpc: paired difference of accuracy to lora" in (tmp_path / "b" / "report.md").read_text()
    with pytest.raises(SystemExit) as exit_info:
        main([str(root), "--out", str(tmp_path / "c"), "--baseline", "dora"])
    assert exit_info.value.code == 2
    assert "--baseline=dora: no completed run of that method; give one of: bitfit, full, lora" in (
        capsys.readouterr().err
    )


# --- colours -----------------------------------------------------------------------------------------


def drawn_colors(monkeypatch, root: Path, out: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Write a report and read back, from the figures as drawn, the colour of each method in the trade-off
    legend and in the curves' panels (the line of the panel's own configuration)."""
    figures: dict[str, plt.Figure] = {}

    def keep(name):
        def save(fig, path):
            figures[name] = fig
            return path

        return save

    monkeypatch.setattr(tradeoff_module, "save_outside", keep("tradeoff"))
    monkeypatch.setattr(curves_module, "save_outside", keep("curves"))
    write_report([root], out, aso_iterations=0)
    legend = figures["tradeoff"].legends[0]
    tradeoff = {
        text.get_text().split()[0]: handle.get_color()
        for text, handle in zip(legend.get_texts(), legend.legend_handles, strict=True)
    }
    panels = {}
    for ax in figures["curves"].axes:
        if ax.get_visible():
            own = ax.lines[-1]  # drawn last, over the grey context lines
            panels[ax.get_title().split()[0]] = own.get_color()
    plt.close("all")
    return tradeoff, panels


def test_a_method_has_one_colour_in_reports_with_different_method_sets(tmp_path, monkeypatch):
    few = write_sweep(tmp_path / "few", ["full", "lora"], seeds=(1, 2), curves=True)
    many = write_sweep(
        tmp_path / "many", ["vera", "bitfit", "ia3", "lora", "full"], seeds=(1, 2), curves=True
    )
    few_tradeoff, few_panels = drawn_colors(monkeypatch, few, tmp_path / "few_report")
    many_tradeoff, many_panels = drawn_colors(monkeypatch, many, tmp_path / "many_report")
    assert set(few_tradeoff) == {"full", "lora"} and set(many_tradeoff) == set(ORDER)
    for method in ("full", "lora"):
        assert few_tradeoff[method] == many_tradeoff[method] == few_panels[method] == many_panels[method]
    assert len(set(many_tradeoff.values())) == len(many_tradeoff)  # one colour each


def test_every_method_of_conf_method_has_a_colour_pair_of_its_own():
    """The palette comes in pairs of two shades of one hue; the 18 methods must not share a pair."""
    names = [
        p.stem for p in (Path(__file__).parents[1] / "conf" / "method").glob("*.yaml") if p.stem != "peft"
    ]
    assert len(names) >= 18
    pairs = [PALETTE.index(method_color(name)) // 2 for name in names]
    assert len(set(pairs)) == len(names)


def test_curve_panels_draw_the_mean_and_range_over_seeds(tmp_path):
    root = write_sweep(tmp_path / "runs", ["full", "lora"], seeds=(1, 2, 3), curves=True)
    (lora,) = [c for c in curves_module.config_curves(load_runs([root]), "val") if c.title.startswith("lora")]
    # seed s: test 0.78 + (s-1)/100 + 0.004 s² (unevenly spaced: mean ± std is not the range); validation
    # 5 points lower at epoch 0, equal at epoch 1
    values = [0.78 + (s - 1) / 100 + 0.004 * s**2 for s in (1, 2, 3)]
    assert list(lora.mean) == pytest.approx([100 * sum(values) / 3 - 5, 100 * sum(values) / 3])
    assert list(lora.low) == pytest.approx([100 * values[0] - 5, 100 * values[0]])
    assert list(lora.high) == pytest.approx([100 * values[2] - 5, 100 * values[2]])
    assert "3 runs" in lora.title


# --- the HTML report ---------------------------------------------------------------------------------


class Tables(HTMLParser):
    """Every <table> of a page as rows of cell texts, and every <img> source."""

    def __init__(self):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images: list[str] = []
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = []
        elif tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def markdown_tables(text: str) -> list[list[list[str]]]:
    """The tables of report.md as rows of cell texts (markup such as **bold** and `code` taken off)."""
    tables, current = [], None
    for line in text.splitlines():
        if line.startswith("| "):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            if set(cells) == {"---"}:
                continue
            cells = [re.sub(r"\*\*|`", "", c).replace("\\|", "|") for c in cells]
            if current is None:
                current = []
                tables.append(current)
            current.append(cells)
        else:
            current = None
    return tables


def test_html_report_holds_every_table_and_figure_of_report_md(tmp_path):
    root = write_sweep(tmp_path / "runs", ["full", "bitfit", "lora"], curves=True)
    report = write_report([root], tmp_path / "report", aso_iterations=0)
    page = Tables()
    page.feed((tmp_path / "report" / "report.html").read_text())
    tables = markdown_tables(report.read_text())
    assert len(tables) >= 3  # methods × tasks, the picked rates, the pairs
    assert page.tables == tables
    figures = re.findall(r"!\[[^]]*\]\(([^)]+)\)", report.read_text())
    assert len(figures) >= 4 and len(page.images) == len(figures)
    for source, name in zip(page.images, figures, strict=True):
        assert source.startswith("data:image/png;base64,")  # inlined: the page opens with no other file
        assert base64.b64decode(source.split(",", 1)[1]) == (tmp_path / "report" / name).read_bytes()


def test_html_trade_off_is_interactive_with_plotly_inlined(tmp_path):
    """Hovering a point of the trade-off figure reads its method, rate, seeds and value; plotly.js is in the
    page itself, no script is fetched."""
    root = write_sweep(tmp_path / "runs", ["full", "lora"], seeds=(1, 2, 4))
    write_report([root], tmp_path / "report", aso_iterations=0)
    text = (tmp_path / "report" / "report.html").read_text()
    spec = (tmp_path / "report" / "tradeoff_mrpc.plotly.json").read_text()
    assert "<script src" not in text and len(text) > 1_000_000  # plotly.js, some 4.8 MB, inlined
    assert spec.replace("</", "<\\/") in text and 'Plotly.newPlot("interactive-1"' in text
    hovers = {
        trace["name"]: trace["hovertemplate"]
        for trace in json.loads(spec)["data"]
        if "hovertemplate" in trace
    }
    lora = [0.78 + (s - 1) / 100 + 0.004 * s**2 for s in (1, 2, 4)]
    assert f"lr 0.001, seeds 1, 2, 4<br>test accuracy {100 * sum(lora) / 3:.1f}" in hovers["lora"]
    assert set(hovers) == {"full", "lora"}


def browser() -> str | None:
    return next(
        (shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None
    )


@pytest.mark.slow
@pytest.mark.skipif(browser() is None, reason="no Chromium installed (apt-get install chromium)")
def test_html_report_renders_in_a_headless_browser(tmp_path):
    """The page loads from disk with no console error, its script ran (it marks every table sortable) and the
    figures decoded; the screenshot of the first screen is left in the test's folder."""
    root = write_sweep(tmp_path / "runs", ["full", "bitfit", "lora", "ia3", "vera"], curves=True)
    html = write_report([root], tmp_path / "report", aso_iterations=0).with_suffix(".html")
    common = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    url = html.resolve().as_uri()
    shot = tmp_path / "first_screen.png"
    run = subprocess.run([*common, f"--screenshot={shot}", "--window-size=1280,900", url],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert shot.is_file() and shot.stat().st_size > 10_000, run.stderr[-2000:]
    dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert "CONSOLE" not in dom.stderr and "Uncaught" not in dom.stderr, dom.stderr[-2000:]
    assert dom.stdout.count('class="sortable"') == dom.stdout.count("<table")
    assert 'class="main-svg"' in dom.stdout  # plotly drew the interactive trade-off figure
    print(f"screenshot: {shot}")

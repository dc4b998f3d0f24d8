"""LoRA subspace analysis (Hu et al. 2021, section 7.2): do LoRA's A matrices of different ranks, or of
different seeds, learn the same directions?

    python -m peft_glue.analyze outputs/lora_rank [more runs or sweeps] [--out DIR]

For two A matrices (r x d) and their right-singular vectors V1, V2 (d x r, strongest first),
φ(A1, A2, i, j) = ||V1[:, :i]ᵀ V2[:, :j]||_F² / min(i, j) is 1 when one top subspace contains the other and
0 when they are orthogonal. Two random subspaces of a d-dim space give max(i, j) / d on average.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display on training machines

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from peft_glue.errors import UserError  # noqa: E402
from peft_glue.record import ADAPTER_DIR, RESULTS_FILE, read_results  # noqa: E402
from peft_glue.results.cli import run_folders_cli  # noqa: E402
from peft_glue.results.formatting import markdown_table  # noqa: E402
from peft_glue.results.runs import existing_paths  # noqa: E402

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
LORA_A = re.compile(r"^(?P<module>.+)\.lora_A(?:\.[^.]+)?\.weight$")  # with or without an adapter name
LAYER = re.compile(r"\.layer\.(\d+)\.")
MEAN = "mean"  # the panel / column that averages φ over all adapted modules


# ---------------------------------------------------------------------------------------------- maths


def right_singular_vectors(a: np.ndarray) -> np.ndarray:
    """The right-singular vectors of A (r x d) as columns (d x r), ordered by decreasing singular value."""
    _, _, vt = np.linalg.svd(np.asarray(a, dtype=np.float64), full_matrices=False)
    return vt.T


def subspace_similarity(a1: np.ndarray, a2: np.ndarray, i: int, j: int) -> float:
    """φ(A1, A2, i, j): how much the top-i right-singular directions of A1 lie in the top-j of A2 (0..1)."""
    v1, v2 = right_singular_vectors(a1), right_singular_vectors(a2)
    if not (1 <= i <= v1.shape[1] and 1 <= j <= v2.shape[1]):
        raise ValueError(f"need 1 <= i <= {v1.shape[1]} and 1 <= j <= {v2.shape[1]} (got i={i}, j={j})")
    return float(np.linalg.norm(v1[:, :i].T @ v2[:, :j]) ** 2 / min(i, j))


def similarity_grid(a1: np.ndarray, a2: np.ndarray) -> np.ndarray:
    """φ(A1, A2, i, j) for every i (rows) and j (columns) from one SVD each: cumulative sums of squared
    cosines between the singular directions give every ||V1[:, :i]ᵀ V2[:, :j]||_F² at once."""
    cosines = right_singular_vectors(a1).T @ right_singular_vectors(a2)
    overlap = np.cumsum(np.cumsum(cosines**2, axis=0), axis=1)
    i, j = np.indices(overlap.shape) + 1
    return overlap / np.minimum(i, j)


# ---------------------------------------------------------------------------------------------- loading


@dataclass
class LoraRun:
    """One LoRA run's learned A matrices, by adapted module, and what it was trained on."""

    run_dir: Path
    task: str
    model: str
    seed: int | None
    r: int
    a: dict[str, np.ndarray]


def module_label(module: str) -> str:
    """``L3.query`` for ``...encoder.layer.3.attention.self.query``."""
    layer = LAYER.search(f"{module}.")
    return f"L{layer.group(1)}.{module.rsplit('.', 1)[-1]}" if layer else module


def module_order(label: str) -> tuple[int, str]:
    layer, _, name = label.partition(".")
    return (int(layer[1:]), name) if layer[1:].isdigit() else (-1, label)


def load_lora_a(weights: Path) -> dict[str, np.ndarray]:
    """The A matrix (r x d) of every adapted module in a PEFT adapter file, keyed by ``module_label``."""
    matrices = {}
    for key, tensor in load_file(str(weights)).items():
        match = LORA_A.match(key)
        if match:
            matrices[module_label(match["module"])] = tensor.astype(np.float64)
    return dict(sorted(matrices.items(), key=lambda item: module_order(item[0])))


def find_lora_runs(paths: Iterable[Path]) -> tuple[list[LoraRun], list[str]]:
    """Runs with a saved adapter below ``paths``, and a note for each adapter that could not be used."""
    runs, skipped = [], []
    seen: set[Path] = set()
    for path in existing_paths(paths):
        for weights in sorted(path.rglob(ADAPTER_WEIGHTS)):
            # a run's final adapter is <run>/adapter/; copies elsewhere (e.g. in checkpoints) are not runs
            if weights.parent.name != ADAPTER_DIR or weights.resolve() in seen:
                continue
            seen.add(weights.resolve())
            run_dir = weights.parent.parent
            results = read_results(run_dir)
            if results is None:
                skipped.append(f"{weights}: no {RESULTS_FILE} in {run_dir}, so task and seed are unknown")
                continue
            a = load_lora_a(weights)
            if not a:
                skipped.append(f"{weights}: no lora_A weights")
                continue
            ranks = {matrix.shape[0] for matrix in a.values()}
            config = weights.parent / ADAPTER_CONFIG
            r = json.loads(config.read_text()).get("r") if config.is_file() else None
            if len(ranks) != 1 or (r is not None and r not in ranks):
                skipped.append(f"{weights}: A matrices of ranks {sorted(ranks)} (adapter_config r={r})")
                continue
            runs.append(LoraRun(run_dir, str(results.task), str(results.model), results.seed, ranks.pop(), a))
    return runs, skipped


# ---------------------------------------------------------------------------------------------- pairs


@dataclass
class SubspaceComparison:
    """φ grids of one kind of pair (e.g. r=4 vs r=16 on MRPC), averaged over all such pairs of runs."""

    kind: str  # "rank" or "seed"
    task: str
    model: str
    r1: int
    r2: int
    pairs: int
    d: int
    grids: dict[str, np.ndarray]  # by module label, plus MEAN

    def phi(self, module: str, i: int, j: int) -> float:
        return float(self.grids[module][i - 1, j - 1])

    @property
    def modules(self) -> list[str]:
        return [m for m in self.grids if m != MEAN]


def compare(kind: str, pairs: list[tuple[LoraRun, LoraRun]]) -> SubspaceComparison | None:
    """Average φ grids over ``pairs``, per module present in both runs, and over modules."""
    per_module: dict[str, list[np.ndarray]] = {}
    for first, second in pairs:
        for module in first.a.keys() & second.a.keys():
            if first.a[module].shape[1] == second.a[module].shape[1]:
                per_module.setdefault(module, []).append(similarity_grid(first.a[module], second.a[module]))
    if not per_module:
        return None
    grids = {m: np.mean(per_module[m], axis=0) for m in sorted(per_module, key=module_order)}
    grids[MEAN] = np.mean(list(grids.values()), axis=0)
    first = pairs[0][0]
    d = next(iter(first.a.values())).shape[1]
    return SubspaceComparison(
        kind, first.task, first.model, pairs[0][0].r, pairs[0][1].r, len(pairs), d, grids
    )


def comparisons(runs: list[LoraRun]) -> list[SubspaceComparison]:
    """Rank pairs: each smaller r vs the largest r, same seed. Seed pairs: same r, different seeds."""
    found = []
    by_task: dict[tuple[str, str], list[LoraRun]] = {}
    for run in runs:
        by_task.setdefault((run.task, run.model), []).append(run)
    for _, task_runs in sorted(by_task.items()):
        largest = max(run.r for run in task_runs)
        for r in sorted({run.r for run in task_runs} - {largest}):
            pairs = [
                (small, large)
                for small in task_runs
                for large in task_runs
                if small.r == r and large.r == largest and small.seed == large.seed
            ]
            if pairs and (comparison := compare("rank", pairs)):
                found.append(comparison)
        for r in sorted({run.r for run in task_runs}):
            same_r = sorted((run for run in task_runs if run.r == r), key=lambda run: str(run.seed))
            pairs = [(a, b) for a, b in itertools.combinations(same_r, 2) if a.seed != b.seed]
            if pairs and (comparison := compare("seed", pairs)):
                found.append(comparison)
    return found


# ---------------------------------------------------------------------------------------------- output


def panels(comparison: SubspaceComparison) -> list[str]:
    """The first and last adapted module (by layer) and the mean over modules."""
    modules = comparison.modules
    return list(dict.fromkeys([modules[0], modules[-1], MEAN]))


def plot_comparison(comparison: SubspaceComparison, path: Path) -> Path:
    names = panels(comparison)
    size = (4.2 * len(names), 3.8)
    fig, axes = plt.subplots(1, len(names), figsize=size, squeeze=False, layout="constrained")
    for ax, name in zip(axes[0], names, strict=True):
        grid = comparison.grids[name]
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", origin="upper", aspect="auto",
                          extent=(0.5, grid.shape[1] + 0.5, grid.shape[0] + 0.5, 0.5))  # fmt: skip
        ax.set_title("mean over modules" if name == MEAN else name)
        ax.set_xlabel(f"j (r={comparison.r2})")
        ax.set_ylabel(f"i (r={comparison.r1})")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    fig.colorbar(image, ax=axes[0].tolist(), label="φ(i, j)")
    what = "rank" if comparison.kind == "rank" else "seed vs seed"
    fig.suptitle(
        f"{comparison.task} ({comparison.model}), {what}: r={comparison.r1} vs r={comparison.r2}, "
        f"mean of {comparison.pairs} pair(s)"
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def rank_rows(found: list[SubspaceComparison]) -> list[list[str]]:
    rows = []
    for c in found:
        first, last = c.modules[0], c.modules[-1]
        rows.append(
            [c.task, c.model, str(c.r1), str(c.r2), str(c.pairs),
             f"{c.phi(first, 1, 1):.3f}", f"{c.phi(last, 1, 1):.3f}", f"{c.phi(MEAN, 1, 1):.3f}",
             f"{c.phi(MEAN, 1, c.r2):.3f}", f"{c.r2 / c.d:.3f}", f"{c.grids[MEAN].mean():.3f}"]
        )  # fmt: skip
    return rows


def seed_rows(found: list[SubspaceComparison]) -> list[list[str]]:
    rows = []
    for c in found:
        first, last = c.modules[0], c.modules[-1]
        rows.append(
            [c.task, c.model, str(c.r1), str(c.pairs),
             f"{c.phi(first, 1, 1):.3f}", f"{c.phi(last, 1, 1):.3f}", f"{c.phi(MEAN, 1, 1):.3f}",
             f"{c.phi(MEAN, c.r1, c.r2):.3f}", f"{c.r1 / c.d:.3f}", f"{c.grids[MEAN].mean():.3f}"]
        )  # fmt: skip
    return rows


def level(value: float, chance: float) -> str:
    """Words for a φ value against what two random subspaces would give on average."""
    if chance >= 0.5:
        return f"random subspaces give {chance:.2f} here"
    if value >= 0.99:
        return "the same subspace"
    return f"{value / chance:.1f}x the random-subspace level"


def reading(found: list[SubspaceComparison]) -> str:
    """One auto-generated paragraph: the numbers the LoRA paper's section 7.2 argues from."""
    sentences = []
    for c in found:
        where = f"On {c.task} ({c.model}, mean over {len(c.modules)} modules and {c.pairs} pair(s))"
        if c.kind == "rank":
            top, within = c.phi(MEAN, 1, 1), c.phi(MEAN, 1, c.r2)
            sentences.append(
                f"{where}, the top direction of r={c.r1} overlaps the top direction of r={c.r2} by "
                f"φ(1,1)={top:.2f} ({level(top, 1 / c.d)}), and lies {within:.2f} inside the whole r={c.r2} "
                f"subspace (φ(1,{c.r2}); random: {c.r2 / c.d:.3f})."
            )
        elif c.r1 > 1:
            top, full = c.phi(MEAN, 1, 1), c.phi(MEAN, c.r1, c.r2)
            sentences.append(
                f"{where}, two seeds at r={c.r1} share their top direction by φ(1,1)={top:.2f} "
                f"({level(top, 1 / c.d)}) and their whole subspaces by φ({c.r1},{c.r1})={full:.2f} "
                f"({level(full, c.r1 / c.d)})."
            )
    if not sentences:
        return "No pairs of runs to compare."
    sentences.append(
        "Hu et al. (2021) read a high φ in the first few directions, and a low one beyond, as a sign that a "
        "small rank already captures the directions that matter."
    )
    return " ".join(sentences)


def write_analysis(paths: Sequence[Path], out: Path) -> Path:
    """Write analysis.md and the heatmaps into ``out``; return the Markdown file."""
    runs, skipped = find_lora_runs(paths)
    if not runs:
        raise UserError(
            f"no LoRA adapter ({ADAPTER_WEIGHTS}) found below {', '.join(map(str, paths))}; "
            "run e.g. `python -m peft_glue.train -m experiment=lora_rank` first"
        )
    out.mkdir(parents=True, exist_ok=True)
    found = comparisons(runs)
    lines = [
        "# LoRA subspace analysis",
        "",
        "φ(A1, A2, i, j) = ||V1[:, :i]ᵀ V2[:, :j]||²_F / min(i, j), with V the right-singular vectors of the "
        "learned A matrices (Hu et al. 2021, section 7.2): 1 = one top subspace contains the other, "
        "0 = orthogonal; random subspaces of dimension d give max(i, j) / d.",
        "",
        f"{len(runs)} LoRA runs: {runs_text(runs)}.",
        "",
        "## Reading",
        "",
        reading(found),
        *rank_section([c for c in found if c.kind == "rank"], out),
        *seed_section([c for c in found if c.kind == "seed"], out),
        "",
        "Columns: *first*/*last* are the first and last adapted modules by layer, *mean* averages over all "
        "adapted modules. Same-seed runs may share part of A's random initialisation, which raises φ "
        "between ranks; the seed-vs-seed numbers show the level without it.",
    ]
    if skipped:
        lines += ["", "## Skipped adapters", "", *(f"- {note}" for note in skipped)]
    analysis = out / "analysis.md"
    analysis.write_text("\n".join(lines) + "\n")
    return analysis


def runs_text(runs: list[LoraRun]) -> str:
    """``mrpc (minilm) r=4: 3, ...``: how many runs of each task, model and rank."""
    counts = Counter((run.task, run.model, run.r) for run in runs)
    ordered = sorted(counts.items(), key=lambda item: (str(item[0][0]), str(item[0][1]), item[0][2]))
    return ", ".join(f"{task} ({model}) r={r}: {n}" for (task, model, r), n in ordered)  # r=4 before r=16


RANK_COLUMNS = ["task", "model", "r (i)", "r (j)", "pairs", "φ(1,1) first", "φ(1,1) last", "φ(1,1) mean",
                "φ(1,r) mean", "random φ(1,r)", "mean φ over i,j"]  # fmt: skip
SEED_COLUMNS = ["task", "model", "r", "pairs", "φ(1,1) first", "φ(1,1) last", "φ(1,1) mean", "φ(r,r) mean",
                "random φ(r,r)", "mean φ over i,j"]  # fmt: skip


def rank_section(rank: list[SubspaceComparison], out: Path) -> list[str]:
    figures = [
        (c, f"rank_{c.task}_{c.model}_r{c.r1}_vs_r{c.r2}.png", f"{c.task}: r={c.r1} vs r={c.r2}")
        for c in rank
    ]
    return pairs_section(
        "Rank vs rank (same seed)",
        "of different r with the same seed",
        rank_rows(rank),
        RANK_COLUMNS,
        figures,
        out,
    )


def seed_section(seed: list[SubspaceComparison], out: Path) -> list[str]:
    figures = [  # a 1 x 1 heatmap says no more than the table
        (c, f"seed_{c.task}_{c.model}_r{c.r1}.png", f"{c.task}: seed vs seed at r={c.r1}")
        for c in seed
        if c.r1 > 1
    ]
    return pairs_section(
        "Seed vs seed (same r)",
        "of the same r with different seeds",
        seed_rows(seed),
        SEED_COLUMNS,
        figures,
        out,
    )


def pairs_section(
    title: str, needs: str, rows: list[list[str]], columns: list[str], figures: list[tuple], out: Path
) -> list[str]:
    """A section of pairs: their table and a heatmap per (comparison, file name, caption) of ``figures``."""
    lines = ["", f"## {title}", ""]
    if not rows:
        return [*lines, f"No pairs: needs LoRA runs {needs} on the same task; skipped."]
    lines.append(markdown_table(pd.DataFrame(rows, columns=columns)))
    for comparison, name, caption in figures:
        path = plot_comparison(comparison, out / name)
        lines += ["", f"![{caption}]({path.name})"]
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    analysis = run_folders_cli(argv, "python -m peft_glue.analyze", __doc__, "analysis", write_analysis)
    print(f"wrote {analysis} and heatmaps in {analysis.parent}")


if __name__ == "__main__":
    main()

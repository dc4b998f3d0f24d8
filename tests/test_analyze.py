"""φ on constructed matrices, and peft_glue.analyze on synthetic LoRA adapters with known overlaps."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from peft_glue.analyze import main, similarity_grid, subspace_similarity, write_analysis

D = 16  # hidden size of the synthetic model
KEY = "base_model.model.bert.encoder.layer.{}.attention.self.query.lora_{}.weight"


def basis(*indices: int, scales: tuple[float, ...] | None = None) -> np.ndarray:
    """Rows = the unit vectors e_k of R^D, scaled so that the first row is the strongest direction."""
    scales = scales or tuple(float(len(indices) - n) for n in range(len(indices)))
    rows = np.zeros((len(indices), D))
    for row, (k, scale) in enumerate(zip(indices, scales, strict=True)):
        rows[row, k] = scale
    return rows


def test_identical_subspaces_give_one():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, D))
    mixed = rng.normal(size=(4, 4)) @ a  # other rows, same row space
    assert subspace_similarity(a, a, 1, 1) == pytest.approx(1.0)
    assert subspace_similarity(a, a, 3, 3) == pytest.approx(1.0)
    assert subspace_similarity(a, mixed, 4, 4) == pytest.approx(1.0)
    # the top-2 subspace lies inside the other matrix's whole 4-dim subspace
    assert subspace_similarity(a, mixed, 2, 4) == pytest.approx(1.0)


def test_orthogonal_subspaces_give_zero():
    assert subspace_similarity(basis(0, 1), basis(2, 3), 2, 2) == pytest.approx(0.0)
    assert subspace_similarity(basis(0, 1, 2), basis(3), 3, 1) == pytest.approx(0.0)


def test_two_dim_subspaces_sharing_one_direction_give_one_half():
    a1 = basis(0, 1)  # strongest e0, then e1
    a2 = basis(0, 2)  # strongest e0, then e2
    assert subspace_similarity(a1, a2, 2, 2) == pytest.approx(0.5)
    assert subspace_similarity(a1, a2, 1, 1) == pytest.approx(1.0)
    # directions are ranked by singular value, not by row: here e1 is a1's strongest direction
    a1_swapped = basis(0, 1, scales=(1.0, 2.0))
    assert subspace_similarity(a1_swapped, a2, 1, 1) == pytest.approx(0.0)
    assert subspace_similarity(a1_swapped, a2, 2, 1) == pytest.approx(1.0)


def test_a_vector_at_45_degrees_overlaps_by_cos_squared():
    a1 = basis(0)
    a2 = np.zeros((1, D))
    a2[0, :2] = 1.0
    assert subspace_similarity(a1, a2, 1, 1) == pytest.approx(0.5)


def test_grid_matches_the_definition_and_accepts_tensors():
    rng = np.random.default_rng(1)
    a1, a2 = rng.normal(size=(3, D)), rng.normal(size=(5, D))
    grid = similarity_grid(a1, a2)
    assert grid.shape == (3, 5)
    for i in range(1, 4):
        for j in range(1, 6):
            assert grid[i - 1, j - 1] == pytest.approx(subspace_similarity(a1, a2, i, j))
    assert ((grid >= -1e-12) & (grid <= 1 + 1e-12)).all()
    assert subspace_similarity(torch.tensor(a1), torch.tensor(a1), 2, 2) == pytest.approx(1.0)


def test_out_of_range_i_or_j_is_an_error():
    with pytest.raises(ValueError, match="i <= 2"):
        subspace_similarity(basis(0, 1), basis(0, 1), 3, 1)
    with pytest.raises(ValueError):
        subspace_similarity(basis(0, 1), basis(0, 1), 1, 0)


def write_lora_run(root: Path, name: str, *, r: int, seed: int, layers: list[np.ndarray], task: str = "mrpc"):
    """A run folder with results.json and a PEFT-format adapter whose A matrices are ``layers``."""
    folder = root / name
    (folder / "adapter").mkdir(parents=True)
    record = {"status": "completed", "task": task, "model": "tiny", "seed": seed,
              "method": {"name": "lora", "lr": 1e-3, "r": r, "alpha": 8}}  # fmt: skip
    (folder / "results.json").write_text(json.dumps(record))
    tensors = {}
    for layer, a in enumerate(layers):
        assert a.shape == (r, D)
        tensors[KEY.format(layer, "A")] = torch.tensor(a, dtype=torch.float32)
        tensors[KEY.format(layer, "B")] = torch.zeros(D, r)
    tensors["base_model.model.classifier.weight"] = torch.zeros(2, D)
    save_file(tensors, str(folder / "adapter" / "adapter_model.safetensors"))
    (folder / "adapter" / "adapter_config.json").write_text(json.dumps({"r": r, "peft_type": "LORA"}))
    return folder


@pytest.fixture
def lora_sweep(tmp_path) -> Path:
    """r in {1, 4} x seeds {1, 2} on MRPC, 2 layers. Seed s lives in the block e_{4s-4} .. e_{4s-1}:

    - layer 0: r=1 learns the top direction of r=4 (φ(1,1) = 1); layer 1: its second one (φ(1,1) = 0,
      φ(1,4) = 1);
    - the two seeds are orthogonal (seed vs seed φ = 0 everywhere).
    """
    root = tmp_path / "lora_rank"
    for seed in (1, 2):
        o = 4 * (seed - 1)
        write_lora_run(root, f"r4_s{seed}", r=4, seed=seed, layers=[basis(o, o + 1, o + 2, o + 3)] * 2)
        write_lora_run(root, f"r1_s{seed}", r=1, seed=seed, layers=[basis(o), basis(o + 1)])
    # an r=1 run whose seed has no r=4 run: not a rank pair, but a seed pair at r=1
    write_lora_run(root, "r1_s3", r=1, seed=3, layers=[basis(8), basis(9)])
    return root


def rows_of(text: str, title: str) -> list[list[str]]:
    part = text.split(f"## {title}")[1].split("\n## ")[0]
    rows = [
        [c.strip() for c in line.strip("| ").split(" | ")] for line in part.splitlines() if line[:2] == "| "
    ]
    return [row for row in rows[1:] if set(row) != {"---"}]


def test_analysis_tables_heatmaps_and_reading(lora_sweep, tmp_path):
    out = tmp_path / "analysis"
    text = write_analysis([lora_sweep], out).read_text()

    rank = rows_of(text, "Rank vs rank (same seed)")
    # task, model, r (i), r (j), pairs, φ(1,1) first, last, mean, φ(1,r) mean, random φ(1,r), mean φ
    assert rank == [["mrpc", "tiny", "1", "4", "2", "1.000", "0.000", "0.500", "1.000", "0.250", "0.875"]]

    seed = {row[2]: row for row in rows_of(text, "Seed vs seed (same r)")}
    assert set(seed) == {"1", "4"}
    assert seed["1"][3] == "3" and seed["4"][3] == "1"  # pairs: 3 seeds at r=1, 2 at r=4
    assert seed["4"][4:8] == ["0.000", "0.000", "0.000", "0.000"]

    assert "the top direction of r=1 overlaps the top direction of r=4 by φ(1,1)=0.50" in text
    assert "lies 1.00 inside the whole r=4 subspace" in text
    assert "two seeds at r=4 share their top direction by φ(1,1)=0.00" in text

    for name in ("rank_mrpc_tiny_r1_vs_r4.png", "seed_mrpc_tiny_r4.png"):
        png = out / name
        assert png.is_file() and png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
        assert f"]({name})" in text
    assert not (out / "seed_mrpc_tiny_r1.png").exists()  # 1 x 1: the table says it all


def test_run_counts_list_ranks_in_numeric_order(tmp_path):
    write_lora_run(tmp_path, "r16", r=16, seed=1, layers=[basis(*range(16))])
    write_lora_run(tmp_path, "r4", r=4, seed=1, layers=[basis(0, 1, 2, 3)])
    text = write_analysis([tmp_path], tmp_path / "analysis").read_text()
    assert "2 LoRA runs: mrpc (tiny) r=4: 1, mrpc (tiny) r=16: 1." in text


def test_runs_are_matched_by_task(tmp_path):
    write_lora_run(tmp_path, "mrpc_r4", r=4, seed=1, layers=[basis(0, 1, 2, 3)])
    write_lora_run(tmp_path, "sst2_r1", r=1, seed=1, layers=[basis(0)], task="sst2")
    text = write_analysis([tmp_path], tmp_path / "analysis").read_text()
    assert rows_of(text, "Rank vs rank (same seed)") == []
    assert "No pairs: needs LoRA runs of different r with the same seed" in text


def test_cli_default_out_skips_unknown_runs_and_fails_without_adapters(lora_sweep, tmp_path, capsys):
    orphan = tmp_path / "lora_rank" / "orphan" / "adapter"
    orphan.mkdir(parents=True)
    save_file({KEY.format(0, "A"): torch.ones(2, D)}, str(orphan / "adapter_model.safetensors"))
    main([str(lora_sweep)])
    text = (lora_sweep / "analysis" / "analysis.md").read_text()
    assert "## Skipped adapters" in text and "orphan" in text and "no results.json" in text
    assert "5 LoRA runs" in text
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main([str(empty)])
    assert exit_info.value.code == 2 and "no LoRA adapter" in capsys.readouterr().err

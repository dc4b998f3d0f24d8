"""Which method runs on which encoder family: every ``conf/method/*.yaml`` (its defaults) applied to a tiny
random model of every family (``benchmarks/tiny_families.py``), then one training step (forward, backward),
so a method that builds but breaks in the forward pass shows too. A cell is the trainable-parameter count
(at tiny size: hidden 32, 2 layers, 2 labels) or the refusal; ``--write`` puts the table into the docs page
``docs/how-to/model.md`` between its markers (tests/test_roles.py fails when that table is stale).

    python -m benchmarks.compat_matrix            # print the table
    python -m benchmarks.compat_matrix --write    # and update docs/how-to/model.md
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from benchmarks.tiny_families import FAMILIES, tiny_model
from peft_glue.errors import UserError
from peft_glue.training.config_paths import CONFIG_DIR
from peft_glue.training.methods import Method
from peft_glue.training.models import parameter_summary

PAGE = Path(__file__).resolve().parent.parent / "docs" / "how-to" / "model.md"  # the method x family matrix
START, END = "<!-- compat-matrix:start -->", "<!-- compat-matrix:end -->"


def method_names() -> list[str]:
    return sorted(path.stem for path in (CONFIG_DIR / "method").glob("*.yaml"))


def build_method(name: str) -> Method:
    return instantiate(OmegaConf.load(CONFIG_DIR / "method" / f"{name}.yaml").method, _convert_="all")


def train_step(method: Method, model: torch.nn.Module) -> None:
    """One AdamW step on two short sentences (labels 0, 1): raises where the method breaks the model."""
    ids = torch.tensor([[2, 10, 11, 12, 3], [2, 13, 14, 3, 0]])
    mask = (ids != 0).long()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    model.train()
    loss = torch.nn.functional.cross_entropy(
        model(input_ids=ids, attention_mask=mask).logits, torch.tensor([0, 1])
    )
    loss.backward()
    optimizer.step()


def cell(method_name: str, family: str) -> tuple[str, str | None]:
    """(the cell's text, the refusal's reason or None)."""
    torch.manual_seed(0)
    method = build_method(method_name)
    model = tiny_model(family)
    try:
        model = method.apply(model)
        method.start_training(model, total_steps=100)
        train_step(method, model)
    except UserError as error:
        return "refused", str(error).split(": ", 1)[-1]
    except Exception as error:  # a bug: shown in the table (and failing its test), not hiding the rest
        return f"fails: {type(error).__name__}", None
    count = f"{parameter_summary(model)['trainable_params']:,}"
    fused = any("fused" in note for note in method.notes)
    return (f"{count} (fused)" if fused else count), None


def matrix_markdown() -> str:
    """The table and its legend of refusal reasons."""
    families = list(FAMILIES)
    reasons: list[str] = []
    rows = ["| method | " + " | ".join(families) + " |", "|---|" + "---:|" * len(families)]
    for name in method_names():
        cells = []
        for family in families:
            text, reason = cell(name, family)
            if reason is not None:
                if reason not in reasons:
                    reasons.append(reason)
                text = f"refused ({reasons.index(reason) + 1})"
            cells.append(text)
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    legend = [f"({i}) {reason}" for i, reason in enumerate(reasons, 1)]
    fused = (
        "(fused): query/key/value sit in one fused matrix (ModernBERT's `Wqkv`); the whole matrix is adapted."
    )
    return "\n".join([*rows, "", *[f"{line}  " for line in legend], fused])


def page_block(text: str) -> str:
    """The page's table between the markers."""
    start, end = text.index(START) + len(START), text.index(END)
    return text[start:end].strip()


def write_page(table: str, page: Path = PAGE) -> None:
    text = page.read_text()
    start, end = text.index(START) + len(START), text.index(END)
    page.write_text(f"{text[:start]}\n{table}\n{text[end:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--write", action="store_true", help="update docs/how-to/model.md between its markers"
    )
    args = parser.parse_args()
    logging.getLogger("peft_glue").setLevel(logging.ERROR)  # the fused-matrix notes: shown in the table
    table = matrix_markdown()
    print(table)
    if args.write:
        write_page(table)


if __name__ == "__main__":
    main()

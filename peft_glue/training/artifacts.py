"""What a trained model leaves in its run folder: its weights in the method's format (and merged, on
request) and the GLUE submission files of its predictions. Every file is written atomically."""

from __future__ import annotations

from pathlib import Path

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from peft_glue.record import MERGED_DIR, MODEL_DIR, write_atomic, write_folder_atomic
from peft_glue.training.file_task import FileTask, write_prediction_table
from peft_glue.training.methods import Method
from peft_glue.training.tasks import GlueTask


def export_trained(
    method: Method, model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, run_dir: Path, merge: bool
) -> dict[str, str]:
    """The trained weights in the method's own format (and, with merge, as a plain transformers model)."""

    def save_merged(folder: Path) -> None:
        method.merged(model).save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    def save_weights(folder: Path) -> None:
        method.save(model, folder)
        if method.export_dir == MODEL_DIR:  # a whole model: with its tokenizer, a pipeline loads it alone
            tokenizer.save_pretrained(folder)

    exports = {"weights": str(write_folder_atomic(run_dir / method.export_dir, save_weights))}
    if merge:
        exports["merged"] = str(write_folder_atomic(run_dir / MERGED_DIR, save_merged))
    return exports


def write_submission(
    path: Path,
    task: GlueTask,
    predictions: list[tuple[torch.Tensor, torch.Tensor]],
    rows: Dataset | None = None,
) -> Path:
    """GLUE leaderboard format: `index<TAB>prediction`, one line per test example, in index order, each
    prediction as the task writes it (a class name or a score). A task of one's own: each prediction beside
    its row's id or text (``rows``, the split as read), in the file type of ``path``."""
    if isinstance(task, FileTask) and rows is not None:
        return write_prediction_table(path, task, rows, predictions)
    indices = torch.cat([idx for idx, _ in predictions]).tolist()
    values = torch.cat([pred for _, pred in predictions]).tolist()
    rows = sorted(zip(indices, values, strict=True))  # a regression task's scores: clipped by the task
    lines = ["index\tprediction", *(f"{i}\t{task.format_prediction(value)}" for i, value in rows)]
    write_atomic(path, "\n".join(lines) + "\n")
    return path


def per_split(predicted: list, splits: list[str]) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """``Trainer.predict``'s result by test split: one list of batches per loader (MNLI: matched,
    mismatched, AX), or a single list for a single loader."""
    if len(splits) == 1:
        return {splits[0]: predicted}
    return dict(zip(splits, predicted, strict=True))


def write_submissions(
    folder: Path,
    task: GlueTask,
    predictions: dict[str, list[tuple[torch.Tensor, torch.Tensor]]],
    rows: dict[str, Dataset] | None = None,
) -> list[Path]:
    """One submission file per test split (``task.submission_file_of``), in ``folder``; ``rows``: each
    split as read (a task of one's own writes its predictions beside them)."""
    return [
        write_submission(folder / task.submission_file_of(split), task, batches, (rows or {}).get(split))
        for split, batches in predictions.items()
    ]

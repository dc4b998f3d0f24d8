"""A validation split carved from the training set, so that GLUE's dev set can serve as an untouched test set.

``data.validation_size`` (a count, or a fraction of the training set) moves that many training examples into
a validation split, stratified by label (regression tasks: by score quintiles), drawn with ``data.split_seed``
and nothing else: every method, learning rate and run seed gets the same split. The best epoch, early
stopping, learning-rate selection and Optuna all look at it; GLUE's dev set becomes the ``test`` split,
evaluated once at the end with the selected checkpoint, and GLUE's unlabelled test set the ``predict`` split
(the submission file). ``validation_size: null`` keeps the old layout (GLUE dev = validation).

A dataset of one's own without a test file (file_task.py) gets a test split the same way:
``data.test_size`` carves it from train, so that methods are compared on examples that picked nothing.

Order of the cuts: first the validation split is carved from the whole training set, then the test split
(``data.test_size``) from the rest, then ``data.train_subset`` takes its fixed random N from what remains
(so a subset never overlaps validation or test, and the validation split depends on neither).
"""

from __future__ import annotations

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict

from peft_glue.errors import UserError
from peft_glue.training.tasks import GlueTask

STRATUM = "_stratum"  # temporary column: the class, or the score bin of a regression target
SCORE_BINS = 5  # regression targets are stratified by quintiles of the score


def validation_count(size: int | float, n_train: int, key: str = "data.validation_size") -> int:
    """``data.validation_size`` (or ``data.test_size``) as a number of examples: an int is a count, a float
    in (0, 1) a fraction."""
    if isinstance(size, bool) or not isinstance(size, int | float):
        raise UserError(f"{key} must be a count or a fraction (got {size!r})")
    if isinstance(size, float) and not size.is_integer():
        if not 0 < size < 1:
            raise UserError(f"{key}={size}: a fraction must lie between 0 and 1")
        count = round(size * n_train)
    else:
        count = int(size)
    if not 0 < count < n_train:
        raise UserError(
            f"{key}={size} gives {count} of {n_train} training examples; "
            "it must leave at least one on each side"
        )
    return count


def strata(labels: list[float] | list[int], task: GlueTask) -> tuple[list[int], int]:
    """The stratum of each example and how many there are: the class, or the score's quintile."""
    if not task.is_regression:
        return [int(label) for label in labels], task.num_labels
    scores = np.asarray(labels, dtype="float64")
    edges = np.unique(np.quantile(scores, np.linspace(0, 1, SCORE_BINS + 1)[1:-1]))
    return np.digitize(scores, edges).tolist(), len(edges) + 1


def stratified_cut(
    train: Dataset, task: GlueTask, size: int | float, split_seed: int, key: str
) -> tuple[Dataset, Dataset]:
    """train -> (the rest, ``size`` examples drawn with ``split_seed``, stratified by label)."""
    count = validation_count(size, len(train), key)
    labels, n_strata = strata(train["label"], task)
    marked = train.add_column(STRATUM, labels).cast_column(
        STRATUM, ClassLabel(names=[str(i) for i in range(n_strata)])
    )
    try:  # datasets' own stratified split (scikit-learn's StratifiedShuffleSplit algorithm)
        parts = marked.train_test_split(test_size=count, seed=split_seed, stratify_by_column=STRATUM)
    except ValueError as error:  # a class too small to appear on both sides
        raise UserError(f"{key}: cannot stratify a split of {count} examples: {error}") from error
    return parts["train"].remove_columns(STRATUM), parts["test"].remove_columns(STRATUM)


def carve_test(raw: DatasetDict, task: GlueTask, size: int | float, split_seed: int) -> DatasetDict:
    """train -> (train, test), for a dataset without a test file: the methods are then compared on a test
    split, not on the validation split that picked their epochs and learning rates."""
    if "test" in raw:
        raise UserError(
            f"data.test_size carves a test split for a dataset without one, and task {task.name} has one "
            "(its test file, or its validation file once data.validation_size carves validation); "
            "drop data.test_size"
        )
    train, test = stratified_cut(raw["train"], task, size, split_seed, "data.test_size")
    return DatasetDict({**raw, "train": train, "test": test})


def carve_validation(raw: DatasetDict, task: GlueTask, size: int | float, split_seed: int) -> DatasetDict:
    """train -> (train, validation); GLUE's validation (dev) sets -> test*; GLUE's test sets -> predict*."""
    train, validation = stratified_cut(raw["train"], task, size, split_seed, "data.validation_size")
    carved = DatasetDict(train=train, validation=validation)
    for split, dataset in raw.items():  # MNLI's validation_mm becomes test_mm, its test_mm predict_mm
        if split.startswith("validation"):
            carved["test" + split.removeprefix("validation")] = dataset
        elif split.startswith("test"):
            carved["predict" + split.removeprefix("test")] = dataset
    return carved


def split_summary(
    splits: dict[str, Dataset],
    validation_size: int | float | None,
    split_seed: int,
    test_size: int | float | None = None,
    given: tuple[str, str] = ("glue_dev", "glue_test"),
) -> dict:
    """What results.json says about the splits: where validation and test come from, and their sizes.
    ``given``: what the task's own validation and test splits are (GLUE's dev and test sets, or the files of
    a dataset of one's own)."""
    carved = validation_size is not None
    given_dev, given_test = given
    test_from = "train" if test_size is not None else given_dev if carved else given_test
    if not any(name.startswith(("test", "predict")) for name in splits):  # a dataset without a test set
        test_from = None
    return {
        "validation_from": "train" if carved else given_dev,
        "test_from": test_from,
        "validation_size": validation_size,
        "test_size": test_size,
        "split_seed": split_seed if carved or test_size is not None else None,
        "sizes": {name: len(dataset) for name, dataset in splits.items()},
    }

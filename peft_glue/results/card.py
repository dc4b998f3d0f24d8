"""The model card of a finished run: ``README.md`` in each export folder (adapter/, bitfit/, model/, merged/),
in the Hugging Face model-card format: YAML front matter (library, base model, tags, dataset, metrics and a
``model-index`` with the run's validation and labelled test results) and a Markdown body (base model, method
and its hyperparameters, data, training settings, results, the command that reproduces the run, how to load
the export). Built from ``results.json`` alone (and the saved overrides), so it is written when a run
completes (``train``) and rewritten by ``python -m peft_glue.export`` (with the Hub repository to load from).
Like the whole results wing, it imports neither torch nor Lightning.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import yaml

from peft_glue.record import (
    ADAPTER_DIR,
    BITFIT_DIR,
    MERGED_DIR,
    MODEL_DIR,
    SAVED_CONFIG,
    SAVED_OVERRIDES,
    RunResults,
    is_hub_id,
    read_results,
    write_atomic,
)

CARD_FILE = "README.md"
GLUE_DATASET = "nyu-mll/glue"
# peft_glue's metric names -> the Hub's metric ids (derived metrics such as acc_and_f1 keep their name)
HUB_METRICS = {
    "mcc": "matthews_correlation",
    "pearson": "pearsonr",
    "spearman": "spearmanr",
    "f1_macro": "f1",
    "f1_micro": "f1",
}
CARD_NOT_METRICS = ("epoch", "step", "loss")  # bookkeeping in a metrics dict


def library_of(kind: str) -> str:
    """``peft`` for an adapter, ``transformers`` for a whole model and for BitFit's tensors (which load into a
    transformers model)."""
    return "peft" if kind == ADAPTER_DIR else "transformers"


def task_name(results: RunResults) -> str:
    return results.task or "glue"


def own_dataset(results: RunResults) -> dict[str, str] | None:
    """A task of one's own (a yaml, file_task.py): its files or Hub dataset; None: a GLUE task."""
    return results.task_info.dataset if results.task_info else None


def task_title(results: RunResults) -> str:
    """GLUE's name of the task (``GLUE RTE``, ``GLUE SST-2``), or the name of one's own task."""
    if own_dataset(results) is not None:
        return task_name(results)
    columns = results.task_info.glue_columns if results.task_info else {}
    return "GLUE " + next(iter(columns), task_name(results).upper()).removesuffix("-m")


def metric_values(values: dict | None, metrics: list[str]) -> dict[str, dict[str, float]]:
    """The task's metrics in ``values`` (val.best or test), grouped by evaluation set suffix (``""``, MNLI's
    ``_mm``): {suffix: {metric: value}}."""
    grouped: dict[str, dict[str, float]] = {}
    for key, value in (values or {}).items():
        if key in CARD_NOT_METRICS or key.startswith("loss"):
            continue
        name = next((m for m in sorted(metrics, key=len, reverse=True) if key.startswith(m)), None)
        if name is None or not isinstance(value, int | float):
            continue
        grouped.setdefault(key.removeprefix(name), {})[key] = float(value)
    return grouped


def result_sets(results: RunResults) -> list[tuple[str, str, dict[str, float]]]:
    """(split of the Hub dataset, what it is, metrics) of every evaluated set: validation (the best epoch,
    the one exported) and, when validation was carved from train, GLUE's labelled dev set as the test set."""
    metrics = results.task_info.metrics if results.task_info else []
    own = own_dataset(results) is not None
    test_carved = bool(results.splits and results.splits.test_from == "train")
    sets = []
    for suffix, values in metric_values(results.best, metrics).items():
        if results.validation_carved:
            sets.append((f"train{suffix}", "validation carved from train", values))
        else:
            sets.append((f"validation{suffix}", "validation" if own else "validation (GLUE dev)", values))
    for suffix, values in metric_values(results.test, metrics).items():
        if test_carved:
            sets.append((f"train{suffix}", "test carved from train", values))
        elif own:
            sets.append(("validation" if results.validation_carved else "test", "test", values))
        else:
            sets.append((f"validation{suffix}", "test (GLUE dev)", values))
    return sets


def front_matter(results: RunResults, kind: str, name: str) -> dict[str, Any]:
    task = task_name(results)
    metrics = results.task_info.metrics if results.task_info else []
    derived = set(metrics) - {"accuracy", "f1", "f1_macro", "f1_micro", "mcc", "pearson", "spearman"}
    meta: dict[str, Any] = {"library_name": library_of(kind)}
    if results.hub_model_id:
        meta["base_model"] = results.hub_model_id
    own = own_dataset(results)
    hub_dataset = GLUE_DATASET if own is None else own.get("hub")
    glue = [] if own is not None else ["glue"]
    meta["tags"] = list(
        dict.fromkeys(["peft_glue", results.method_name or "unknown", *glue, task, "text-classification"])
    )
    if hub_dataset:
        meta["datasets"] = [hub_dataset]
    meta["metrics"] = [HUB_METRICS.get(m, m) for m in metrics if m not in derived]
    meta["pipeline_tag"] = "text-classification"
    config = task if own is None else own.get("hub_config")
    dataset = {
        "name": task_title(results),
        "type": hub_dataset or task,
        **({"config": config} if config else {}),
    }
    meta["model-index"] = [
        {
            "name": name,
            "results": [
                {
                    "task": {"type": "text-classification", "name": "Text Classification"},
                    "dataset": {**dataset, "split": split},
                    "metrics": [
                        {"type": HUB_METRICS.get(key, key), "value": value, "name": key}
                        for key, value in values.items()
                    ],
                }
                for split, _, values in result_sets(results)
            ],
        }
    ]
    return meta


def saved_overrides(results: RunResults, run_dir: Path) -> list[str] | None:
    """The run's command-line overrides: results.json's, else Hydra's copy in .hydra/overrides.yaml."""
    if results.overrides:
        return list(results.overrides)
    path = run_dir / SAVED_OVERRIDES
    return [str(o) for o in yaml.safe_load(path.read_text()) or []] if path.is_file() else None


def data_source(results: RunResults, run_dir: Path) -> str | None:
    """The local GLUE folder the run read (None: the Hub); older records lack it: the saved config says."""
    if results.data_dir is not None or results.model_name_or_path is not None:
        return results.data_dir
    path = run_dir / SAVED_CONFIG
    config = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    data_dir = (config.get("data") or {}).get("data_dir")
    return None if data_dir is None or str(data_dir).startswith("${") else str(data_dir)


def how_to_load(kind: str, where: str, base: str, labels: list[str]) -> str:
    """Python that loads this export (the base model with the head named as the task's labels)."""
    id2label = dict(enumerate(labels))
    label2id = {label: index for index, label in id2label.items()}
    base_model = (
        f'AutoModelForSequenceClassification.from_pretrained(\n    "{base}", id2label={id2label}, '
        f"label2id={label2id}\n)"
    )
    if kind == ADAPTER_DIR:
        return (
            "from peft import PeftModel\n"
            "from transformers import AutoModelForSequenceClassification\n\n"
            f"base = {base_model}\n"
            f'model = PeftModel.from_pretrained(base, "{where}")\n'
            "model = model.merge_and_unload()  # optional: a plain transformers model (not prompt learning)"
        )
    if kind == BITFIT_DIR:
        download = (
            f'from huggingface_hub import snapshot_download\n\nfolder = snapshot_download("{where}")\n'
            if is_hub_id(where)
            else f'folder = "{where}"\n'
        )
        return (
            "from transformers import AutoModelForSequenceClassification\n\n"
            "from peft_glue.training.methods import apply_bitfit  # pip install peft_glue\n\n"
            f"{download}model = apply_bitfit({base_model}, folder)  # bitfit.safetensors: biases and head"
        )
    return (
        "from transformers import AutoModelForSequenceClassification, pipeline\n\n"
        f'model = AutoModelForSequenceClassification.from_pretrained("{where}")\n'
        f'classify = pipeline("text-classification", model="{where}")  # answers with the label names'
    )


def fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def model_lines(results: RunResults, kind: str, base: str) -> list[str]:
    """The card's Model section: base model, method and its settings, parameter counts, labels."""
    method_name = results.method_name or "unknown"
    settings = {key: value for key, value in results.method.items() if key != "name"}
    lines = [
        "## Model",
        "",
        f"- Base model: `{base}`" + ("" if is_hub_id(base) else " (a local folder)"),
        f"- Method: `{method_name}`"
        + (f" ({', '.join(f'{k}={v}' for k, v in settings.items())})" if settings else ""),
    ]
    if results.trainable_params is not None:
        lines.append(
            f"- Trainable parameters: {results.trainable_params:,} of {results.total_params or 0:,}"
            f" ({results.trainable_percent}%)"
        )
    if results.adapted_modules:
        shown = ", ".join(f"`{name}`" for name in results.adapted_modules[:6])
        more = len(results.adapted_modules) - 6
        lines.append(
            f"- Adapted ({len(results.adapted_modules)}): {shown}" + (f" and {more} more" if more > 0 else "")
        )
    lines += [f"- Note: {note}" for note in results.adaptation_notes]
    labels = results.task_info.labels if results.task_info else []
    if labels:
        kinds = "Output (regression)" if results.task_info.regression else "Labels"
        lines.append(f"- {kinds}: " + ", ".join(f"{i} = `{label}`" for i, label in enumerate(labels)))
    return lines


def data_lines(results: RunResults, run_dir: Path) -> list[str]:
    """The card's Data section: where the task's files came from, and the sizes of the splits."""
    splits = results.splits
    sizes = splits.sizes if splits else {}
    carved = f"examples carved from train (split_seed {splits.split_seed if splits else None})"
    own = own_dataset(results)
    subset = results.train_subset
    if own is None:
        data_dir = data_source(results, run_dir)
        task_line = f"- Task: {task_title(results)} (`{GLUE_DATASET}`, config `{task_name(results)}`), " + (
            f"read from the local folder `{data_dir}`" if data_dir else "from the Hugging Face Hub"
        )
        validation = (
            f"{splits.validation_size} {carved}; GLUE's dev set is the test set"
            if results.validation_carved
            else "GLUE's validation (dev) set"
        )
        test = None
    else:
        source = ", ".join(f"{split} `{where}`" for split, where in own.items())
        task_line = f"- Task: `{task_name(results)}`, a dataset of one's own: {source}"
        validation = (
            f"{splits.validation_size} {carved}" if results.validation_carved else "its validation set"
        )
        test_carved = splits is not None and splits.test_from == "train"
        test = f"{splits.test_size} {carved}" if test_carved else "its test set" if "test" in sizes else None
    lines = [
        "## Data",
        "",
        task_line,
        f"- Training examples: {sizes.get('train', '?')}"
        + (f" (a fixed random subset: data.train_subset={subset})" if subset else ""),
        f"- Validation: {validation}"
        + (f", {sizes['validation']} examples" if "validation" in sizes else ""),
    ]
    if test is not None:
        lines.append(f"- Test: {test}, {sizes.get('test', '?')} examples")
    return lines


def training_lines(results: RunResults) -> list[str]:
    """The card's Training section: optimizer, budget, seed and precision, the exported epoch."""
    head_lr = results.optimizer.get("head_lr")
    lines = [
        "## Training",
        "",
        f"- Optimizer: AdamW, lr {results.learning_rate}"
        + ("" if head_lr is None else f" (the task head: {head_lr})")
        + f", weight decay {results.optimizer.get('weight_decay')}",
        f"- Epochs: {results.max_epochs}, batch size {results.batch_size}, "
        f"seed {results.seed}, precision {results.precision}",
    ]
    if "epoch" in results.best:
        lines.append(
            f"- Exported: the epoch with the best validation {results.monitor}"
            f" (epoch {results.best['epoch']}, step {results.best.get('step')})"
        )
    return lines


def results_lines(results: RunResults) -> list[str]:
    lines = ["## Results", "", "| set | split | metric | value |", "|---|---|---|---:|"]
    for split, role, values in result_sets(results):
        lines += [f"| {role} | {split} | {key} | {fmt(value)} |" for key, value in values.items()]
    return lines


def provenance_lines(results: RunResults) -> list[str]:
    """The card's Provenance section: code, libraries, hardware, precision, data and base model."""
    found = results.provenance
    if found is None:
        return ["## Provenance", "", "Not recorded (a run of a peft_glue version before provenance)."]
    hardware = found.hardware
    gpu = f"{hardware.get('gpu_count')} x {hardware.get('gpu')}, CUDA {hardware.get('cuda')}"
    base = found.base_model
    copy_of = f" (a copy of `{base['hub_id']}`)" if base.get("hub_id") else ""
    weights = ", ".join(f"`{name}` sha256 {sha}" for name, sha in base.get("weights_sha256", {}).items())
    base_text = (
        f"`{base['hub_id']}`, commit {base.get('hub_commit') or 'not in the cache'}"
        if "hub_commit" in base
        else f"a local folder{copy_of}, weights {weights or 'none found'}"
    )
    lines = [
        "## Provenance",
        "",
        f"- Code: peft_glue {found.code()}",
        "- Libraries: " + ", ".join(f"{name} {version}" for name, version in found.libraries.items()),
        f"- Hardware: {hardware.get('cpu')} ({hardware.get('cpu_cores')} cores)"
        + (f", {gpu}" if hardware.get("gpu_count") else ", no GPU"),
        f"- Precision: {found.precision}",
        f"- Base model: {base_text}",
    ]
    lines += [
        f"- Data: `{name}` {'sha256 ' if not name.startswith('hub:') else 'revision '}{digest}"
        for name, digest in found.data.items()
    ]
    return lines


def reproduce_lines(results: RunResults, run_dir: Path) -> list[str]:
    overrides = saved_overrides(results, run_dir)
    command = (
        "python -m peft_glue.train ...   # the run's overrides were not recorded"
        if overrides is None
        else " ".join(["python -m peft_glue.train", *map(shlex.quote, overrides)])
    )
    return ["## Reproduce", "", "```bash", command, "```"]


def card_text(results: RunResults, run_dir: Path, kind: str, folder: Path, repo_id: str | None = None) -> str:
    """The whole README.md of one export folder of a finished run."""
    method_name = results.method_name or "unknown"
    source = results.hub_model_id or results.model_name_or_path  # a local copy of a Hub model: its Hub id
    base = str(source or "the base model")
    # the model's name: the Hub repository's, else <base model>-<task>-<method>
    name = repo_id or f"{Path(str(source)).name if source else 'model'}-{task_name(results)}-{method_name}"
    what = {
        ADAPTER_DIR: f"a {method_name} adapter (peft) for `{base}`",
        BITFIT_DIR: f"BitFit's trained biases and head for `{base}` (`bitfit.safetensors`)",
        MODEL_DIR: f"`{base}` fully fine-tuned (a whole transformers model)",
        MERGED_DIR: f"`{base}` with the trained {method_name} weights merged in (a plain transformers model)",
    }[kind]
    task_info = results.task_info
    labels = (task_info.labels if task_info else []) or (
        ["score"] if task_info and task_info.regression else ["0", "1"]
    )
    sections = [
        [
            f"# {name.rsplit('/', 1)[-1]}: {task_title(results)} with {method_name}",
            "",
            f"This is {what}, trained on {task_title(results)} with peft_glue "
            f"(PyTorch Lightning, Hydra, 🤗 transformers and peft).",
        ],
        model_lines(results, kind, base),
        data_lines(results, run_dir),
        training_lines(results),
        results_lines(results),
        provenance_lines(results),
        reproduce_lines(results, run_dir),
        ["## Load", "", "```python", how_to_load(kind, repo_id or str(folder), base, labels), "```"],
    ]
    body = "\n\n".join("\n".join(section) for section in sections) + "\n"
    meta = front_matter(results, kind, name.rsplit("/", 1)[-1])
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n\n" + body


def export_folders(results: RunResults, run_dir: Path) -> dict[Path, str]:
    """The run's export folders that exist, each with its kind (its folder name: adapter, model, ...)."""
    folders = {}
    for path in (results.exports or {}).values():
        folder = run_dir / Path(path).name  # the run folder may have moved since
        if folder.is_dir() and folder.name in (ADAPTER_DIR, BITFIT_DIR, MODEL_DIR, MERGED_DIR):
            folders[folder] = folder.name
    return folders


def write_cards(run_dir: Path, results: RunResults | None = None, repo_id: str | None = None) -> list[Path]:
    """Write README.md into every export folder of a finished run; returns the files written."""
    run_dir = Path(run_dir)
    results = read_results(run_dir) if results is None else results
    written = []
    for folder, kind in export_folders(results, run_dir).items():
        write_atomic(folder / CARD_FILE, card_text(results, run_dir, kind, folder, repo_id))
        written.append(folder / CARD_FILE)
    return written

"""``init_from=<run folder | export folder>``: start a run from another run's trained weights (the adapter and
head, BitFit's tensors, or the whole model for ``full``), same method, as the LoRA paper starts MRPC, RTE and
STS-B from its MNLI adapter. A head trained for another number of labels keeps its fresh initialisation.

peft's ``load_peft_weights``/``set_peft_model_state_dict`` map an adapter's saved names onto the model; this
module only picks the source, checks it and leaves a head of another size out (no library decides that)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, set_peft_model_state_dict
from peft.utils import get_peft_model_state_dict, load_peft_weights
from safetensors.torch import load_file
from torch import nn

from peft_glue.errors import UserError
from peft_glue.record import COMPLETED, RESULTS_FILE, RunResults, read_results
from peft_glue.training.methods import Method, is_head_parameter
from peft_glue.training.tasks import GlueTask

log = logging.getLogger("peft_glue")
PEFT_PREFIX = "base_model.model."  # how an adapter's saved names start (peft's PeftModel around the model)


SWEEP = "sweep:"  # init_from=sweep:mnli: the run of that task in this job's own sweep (same seed and model)


def in_this_sweep(init_from: str, run_folder: Path, seed: int, model: str | None) -> Path:
    """The completed run of the task that ``sweep:<task>`` names, beside ``run_folder`` in its sweep folder,
    with the same seed and model option: the LoRA recipe's MNLI run for its RTE job."""
    task = init_from.removeprefix(SWEEP)
    for results_file in sorted(run_folder.parent.glob(f"*/{RESULTS_FILE}")):
        found = read_results(results_file)
        same = found.task == task and found.seed == seed and found.model == model
        if same and found.status == COMPLETED and results_file.parent != run_folder:
            return results_file.parent
    raise UserError(
        f"init_from={init_from}: no completed {task} run with seed {seed} and model={model} in "
        f"{run_folder.parent}; list task={task} first in the sweep (it runs before the tasks it starts)"
    )


def source_of(init_from: str | Path) -> tuple[Path, RunResults]:
    """The export folder of the trained weights and the record of the run that trained them: a run folder
    (its export) or an export folder inside one."""
    path = Path(init_from).expanduser()
    run = path if (path / RESULTS_FILE).is_file() else path.parent
    results = read_results(run) if (run / RESULTS_FILE).is_file() else None
    if results is None:
        raise UserError(f"init_from={init_from}: no run there; give a run folder or its export (adapter/)")
    if results.status != COMPLETED or not results.exports:
        raise UserError(f"init_from={init_from}: that run did not complete (status {results.status})")
    export = path if path != run else run / Path(results.exports["weights"]).name
    if not export.is_dir():
        raise UserError(f"init_from={init_from}: its export {export} is missing")
    return export, results


def label_count(results: RunResults) -> int:
    info = results.task_info
    return 1 if info is not None and info.regression else len(info.labels) if info else 2


def saved_tensors(method: Method, model: nn.Module, export: Path) -> dict[str, torch.Tensor]:
    """The export's trained tensors, under the names its own loader uses."""
    if isinstance(model, PeftModel):
        return load_peft_weights(str(export), device="cpu")
    files = sorted(export.glob("*.safetensors"))
    if not files:
        raise UserError(f"init_from: {export} holds no .safetensors weights")
    return {name: tensor for file in files for name, tensor in load_file(file).items()}


def current_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's tensors under the names an export saves them (an adapter's without the adapter name)."""
    return get_peft_model_state_dict(model) if isinstance(model, PeftModel) else model.state_dict()


def is_head(model: nn.Module, name: str) -> bool:
    """A tensor of the task head (outside the pretrained backbone), under a saved name."""
    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    return is_head_parameter(inner, name.removeprefix(PEFT_PREFIX))


def load_tensors(model: nn.Module, tensors: dict[str, torch.Tensor], init_from: str) -> None:
    """Copy ``tensors`` into ``model``; a tensor of another shape (other method settings) is refused."""
    try:
        if isinstance(model, PeftModel):
            result = set_peft_model_state_dict(model, tensors)
        else:
            result = model.load_state_dict(tensors, strict=False)
    except RuntimeError as error:
        raise UserError(
            f"init_from={init_from}: its tensors do not fit this model (other method settings or another "
            f"model?): {str(error).splitlines()[1] if len(str(error).splitlines()) > 1 else error}"
        ) from error
    if result.unexpected_keys:
        raise UserError(f"init_from={init_from}: tensors this model lacks: {result.unexpected_keys[:3]}")


def initialise_from(init_from: str, method: Method, model: nn.Module, task: GlueTask) -> dict[str, Any]:
    """Load the source run's trained tensors into ``model`` (built for this run's method and task); returns
    what results.json records of it."""
    export, source = source_of(init_from)
    if source.method_name != method.name:
        raise UserError(
            f"init_from={init_from} was trained with method={source.method_name}; this run is "
            f"method={method.name}: give a {method.name} run"
        )
    tensors = saved_tensors(method, model, export)
    head = [name for name in tensors if is_head(model, name)]
    reinitialised = label_count(source) != task.num_labels
    if reinitialised:  # the head keeps its fresh initialisation (peft wants every saved key: they stay)
        fresh = current_tensors(model)
        tensors.update({name: fresh[name].detach().clone() for name in head})
        log.info(
            "init_from: the head of %s (%d labels) is re-initialised for %s (%d labels): %s",
            source.task,
            label_count(source),
            task.name,
            task.num_labels,
            ", ".join(head),
        )
    load_tensors(model, tensors, init_from)
    loaded = len(tensors) - (len(head) if reinitialised else 0)
    log.info("init_from: %d tensors of %s loaded from %s", loaded, source.task, export)
    return {
        "source": str(export.resolve()),
        "task": source.task,
        "method": source.method_name,
        "seed": source.seed,
        "tensors": loaded,
        "head": f"re-initialised ({label_count(source)} -> {task.num_labels} labels)"
        if reinitialised
        else "loaded",
    }

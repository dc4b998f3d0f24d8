"""Where a run came from: the code (version, git commit, dirty), the libraries, the hardware, the precision,
and fingerprints of the data and of the base model, for ``results.json`` (``record.Provenance``) and the
model card. Hashing is hashlib's; versions are the imported modules' own ``__version__``."""

from __future__ import annotations

import hashlib
import importlib
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from peft_glue.record import Provenance, looks_local
from peft_glue.training.file_task import FileTask
from peft_glue.training.hardware import cpuinfo
from peft_glue.training.tasks import GlueTask

PACKAGE_DIR = Path(__file__).resolve().parent.parent
# the libraries whose versions can change a run's numbers: name in results.json -> module
LIBRARIES = {
    "torch": "torch",
    "transformers": "transformers",
    "peft": "peft",
    "lightning": "pytorch_lightning",
    "datasets": "datasets",
    "hydra": "hydra",
}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack")
HUB_DATASET = "nyu-mll/glue"
# the keys of a model yaml's `architecture` that a local copy of its Hub model must share
ARCHITECTURE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size")


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def package_version() -> str | None:
    try:
        return metadata.version("peft_glue")
    except metadata.PackageNotFoundError:
        return None


def git_state(folder: Path = PACKAGE_DIR) -> tuple[str | None, bool | None]:
    """The commit of the git checkout that holds the imported package, and whether it has uncommitted
    changes (ignored files such as outputs/ aside); (None, None) for an installed wheel."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or (Path(top) / "peft_glue").resolve() != folder:
        return None, None
    status = git("status", "--porcelain")
    return git("rev-parse", "HEAD"), None if status is None else bool(status)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name, module in LIBRARIES.items():
        versions[name] = str(getattr(importlib.import_module(module), "__version__", "unknown"))
    return versions


def cpu_model() -> str:
    for line in cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def gpu_name() -> str:
    try:
        return torch.cuda.get_device_name(0)
    except (AssertionError, RuntimeError) as error:  # a driver that cannot say: recorded, not fatal
        return f"unknown ({type(error).__name__})"


def hardware() -> dict[str, Any]:
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return {
        "cpu": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "gpu": gpu_name() if gpus else None,
        "gpu_count": gpus,
        "cuda": torch.version.cuda,
    }


def data_fingerprint(task: GlueTask, data_dir: str | None) -> dict[str, str]:
    """Each local file of the task that exists (path below data_dir -> sha256), or the Hub dataset's
    revision (``hub:<dataset>/<config>`` -> the commit that ``datasets`` resolved and cached). A dataset of
    one's own (``FileTask``): its own files, or its own Hub dataset."""
    if isinstance(task, FileTask):
        if task.hub and not looks_local(task.hub):
            return hub_revision(task.hub, task.hub_config)
        files = [Path(name) for name in (task.train, task.validation, task.test) if name]
        return {str(path): sha256_of(path) for path in files if path.is_file()}
    if data_dir:
        root = Path(data_dir).expanduser()
        names = [f"{task.folder}/{name}" for name in task.local_files.values()]
        names += [name for names in task.optional_local_files.values() for name in names]
        return {name: sha256_of(root / name) for name in names if (root / name).is_file()}
    return hub_revision(HUB_DATASET, task.hub_config)


def hub_revision(dataset: str, config: str | None) -> dict[str, str]:
    """``hub:<dataset>/<config>`` -> the dataset repository's commit that ``datasets`` resolved."""
    from datasets import load_dataset_builder

    try:  # the builder's hash is the dataset repository's commit (offline: the cached one)
        revision = load_dataset_builder(dataset, config).hash
    except Exception as error:  # noqa: BLE001 - a fingerprint that cannot be had is said, not fatal
        revision = f"unknown ({type(error).__name__})"
    return {f"hub:{dataset}/{config}": str(revision)}


def is_copy_of_hub_model(model_config: dict[str, Any], loaded: Any) -> bool:
    """Whether a local folder is the yaml's Hub model: a yaml without an architecture (its folder is its own,
    as minilm's package) says so; else the loaded config must match the yaml's architecture."""
    architecture = model_config.get("architecture")
    if not architecture:
        return True
    return all(
        getattr(loaded, key, None) == architecture[key] for key in ARCHITECTURE_KEYS if key in architecture
    )


def base_model_fingerprint(model_config: dict[str, Any], loaded_config: Any) -> dict[str, Any]:
    """The Hub id and the commit cached for it, or, for a local folder, the sha256 of each weights file
    (and the Hub id of the model it is a copy of, from the yaml's ``hub_id``)."""
    source = str(model_config["name_or_path"])
    path = Path(source).expanduser()
    if not path.exists() and not looks_local(source):
        return {"hub_id": source, "hub_commit": hub_commit(source)}
    hub_id = model_config.get("hub_id")
    weights = sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES) if path.is_dir() else []
    return {
        "hub_id": hub_id if hub_id and is_copy_of_hub_model(model_config, loaded_config) else None,
        "path": str(path.resolve()),
        "weights_sha256": {p.name: sha256_of(p) for p in weights},
    }


def hub_commit(repo_id: str) -> str | None:
    """The commit of the snapshot that huggingface_hub's cache holds for ``repo_id`` (what was loaded)."""
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json")
    return Path(cached).parent.name if isinstance(cached, str) else None


def provenance(
    model_config: dict[str, Any],
    loaded_config: Any,
    precision: str,
    task: GlueTask | None,
    data_dir: str | None,
) -> Provenance:
    """The whole provenance of a run; ``task`` None leaves the data out (a dry run reads none)."""
    commit, dirty = git_state()
    return Provenance(
        peft_glue=package_version(),
        git_commit=commit,
        git_dirty=dirty,
        libraries=library_versions(),
        hardware=hardware(),
        precision=str(precision),
        data=data_fingerprint(task, data_dir) if task is not None else {},
        base_model=base_model_fingerprint(model_config, loaded_config),
    )

"""For a finished run's export folder(s): rewrite the model card (README.md) and the label names
(id2label/label2id of each config.json), and push one folder to the Hugging Face Hub. (What training writes
there: ``peft_glue.training.artifacts``.)

    python -m peft_glue.export run=outputs/runs/<run>                             # card and labels only
    python -m peft_glue.export run=outputs/runs/<run> push_to_hub=user/repo [private=true] [folder=merged]

The folder pushed is the method's export (adapter/, bitfit/ or model/), or ``folder=merged``. Pushing needs
a Hub token (``hf auth login`` or HF_TOKEN); without the network it fails in one line and leaves the export
as it is.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from peft_glue.errors import UserError, exit_with
from peft_glue.record import COMPLETED, SAVED_CONFIG, RunResults, TaskInfo, read_results, write_atomic
from peft_glue.results.card import card_text, export_folders, write_cards
from peft_glue.training.models import label_fields
from peft_glue.training.run_settings import require_run, split_settings

# --------------------------------------------------------------------------------- python -m peft_glue.export
EXPORT_SETTINGS = ("run", "push_to_hub", "private", "folder")
EXPORT_USAGE = "python -m peft_glue.export run=PATH [push_to_hub=USER/REPO] [private=true] [folder=merged]"


def run_labels(run_dir: Path, results: RunResults) -> dict[int, str] | None:
    """The task's label names: results.json's, else the task of the saved config (an older run)."""
    labels = results.task_info.labels if results.task_info else None
    if labels:
        return dict(enumerate(labels))
    if (run_dir / SAVED_CONFIG).is_file():
        from peft_glue.training.config import build, load_saved_config

        return build(load_saved_config(run_dir / SAVED_CONFIG).task).id2label
    return None


def name_labels_in(folder: Path, id2label: dict[int, str]) -> bool:
    """id2label/label2id in the folder's config.json (a transformers model's; peft's adapter/ has none)."""
    path = folder / "config.json"
    if not path.is_file():
        return False
    config = {**json.loads(path.read_text()), **label_fields(id2label)}
    write_atomic(path, json.dumps(config, indent=2, sort_keys=True) + "\n")
    return True


def is_network_error(error: Exception) -> bool:
    """No connection to the Hub: offline mode, DNS, refused or timed-out connections (httpx, requests)."""
    if isinstance(error, ConnectionError | TimeoutError):
        return True
    return any(
        cls.__module__.split(".")[0] in ("httpx", "httpx2", "requests", "urllib3")
        for cls in type(error).__mro__
    )


def push_to_hub(folder: Path, repo_id: str, private: bool) -> str:
    """Create the model repository (if need be) and upload the folder; every failure is one UserError that
    says where the export still is."""
    import huggingface_hub
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalTokenNotFoundError

    kept = f"the export is in {folder}"
    try:
        api = huggingface_hub.HfApi()
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message=f"peft_glue: {folder.parent.name} ({folder.name}/)",
        )
    except HfHubHTTPError as error:
        reason = " ".join(str(error).split())[:300]
        raise UserError(
            f"the Hugging Face Hub refused to push {folder} to {repo_id}: {reason}; {kept}"
        ) from None
    except LocalTokenNotFoundError:
        raise UserError(
            f"no Hugging Face token to push {folder} (hf auth login, or HF_TOKEN); {kept}"
        ) from None
    except HFValidationError as error:
        raise UserError(f"push_to_hub={repo_id} is no repository id (user/name): {error}; {kept}") from None
    except Exception as error:
        if not is_network_error(error):
            raise
        reason = " ".join(str(error).split())[:300]
        raise UserError(
            f"cannot reach the Hugging Face Hub to push {folder} (offline?): {reason}; {kept}"
        ) from None
    return f"https://huggingface.co/{repo_id}"


def export(
    run_dir: Path, repo_id: str | None = None, private: bool = False, folder: str | None = None
) -> list[str]:
    """Rewrite the model card and the label names of a finished run's export folders (and print the cards
    written), then push one of them (``folder``, else the method's export) to ``repo_id``; returns the cards
    written and the repository's address."""
    results = read_results(run_dir)
    if results is None or results.status != COMPLETED:
        status = results.status if results else "no results.json"
        raise UserError(f"run={run_dir} is not a completed run ({status}); train it to the end first")
    folders = export_folders(results, run_dir)
    if not folders:
        raise UserError(f"run={run_dir} has no export folder (adapter/, bitfit/, model/ or merged/)")
    id2label = run_labels(run_dir, results)
    if id2label:
        results.task_info = replace(results.task_info or TaskInfo(), labels=list(id2label.values()))
        for each in folders:
            name_labels_in(each, id2label)
    done = [str(path) for path in write_cards(run_dir, results)]
    print(*done, sep="\n", flush=True)  # said before a push that may fail
    if repo_id:
        weights = Path(results.exports["weights"]).name
        chosen = run_dir / (folder or weights)
        if chosen not in folders:
            raise UserError(
                f"folder={folder}: the run has no such export; one of {', '.join(f.name for f in folders)}"
            )
        write_atomic(chosen / "README.md", card_text(results, run_dir, folders[chosen], chosen, repo_id))
        done.append(push_to_hub(chosen, repo_id, private))
        print(f"pushed {chosen} to {done[-1]}")
    return done


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m peft_glue.export",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "settings",
        nargs="+",
        help="run=PATH, and optionally push_to_hub=USER/REPO, private=true, folder=merged",
    )
    settings, unknown = split_settings(parser.parse_args(argv).settings, EXPORT_SETTINGS)
    if unknown:
        key = unknown[0].partition("=")[0]
        exit_with(
            f"export takes no setting '{key}'; it accepts {', '.join(k + '=' for k in EXPORT_SETTINGS)}"
        )
    try:
        require_run(settings, EXPORT_USAGE)
    except UserError as error:
        exit_with(str(error))
    private = settings.get("private", "false").lower()
    if private not in ("true", "false"):
        exit_with(f"private={settings['private']} is not valid: expected true or false, e.g. private=true")
    if "private" in settings and "push_to_hub" not in settings:
        exit_with("private= applies to push_to_hub=USER/REPO; give both")
    try:
        export(Path(settings["run"]), settings.get("push_to_hub"), private == "true", settings.get("folder"))
    except UserError as error:
        exit_with(str(error))


if __name__ == "__main__":
    main(sys.argv[1:])

"""Collect a GLUE server submission from finished runs: the best run of each task, its submission files.

    python -m peft_glue.submit outputs/multirun/<sweep> outputs/runs/<run> ... --out submission

For every task, the completed run with the highest validation value of the task's monitor (results.json's
``val.best``) is chosen; its submission files (CoLA.tsv ... WNLI.tsv, MNLI-m.tsv, MNLI-mm.tsv, AX.tsv) are
copied into the output folder, which is also zipped (``<out>.zip``, the files at its top, as the GLUE server
wants them), next to ``selection.json`` (which run gave which file). The tasks that no run covers are listed:
the server accepts only the complete set.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import zipfile
from collections.abc import Sequence
from pathlib import Path

from peft_glue.errors import UserError, exit_with
from peft_glue.record import COMPLETED, RESULTS_FILE, read_results, write_atomic

# The complete set the GLUE server accepts: file -> the task whose run writes it
GLUE_SUBMISSION = {
    "CoLA.tsv": "cola",
    "SST-2.tsv": "sst2",
    "MRPC.tsv": "mrpc",
    "STS-B.tsv": "stsb",
    "QQP.tsv": "qqp",
    "MNLI-m.tsv": "mnli",
    "MNLI-mm.tsv": "mnli",
    "QNLI.tsv": "qnli",
    "RTE.tsv": "rte",
    "WNLI.tsv": "wnli",
    "AX.tsv": "mnli",
}


def monitored_value(record: dict) -> float:
    """The best epoch's value of the run's monitor (NaN when it has none)."""
    monitor = (record.get("task_info") or {}).get("monitor", "accuracy")
    value = ((record.get("val") or {}).get("best") or {}).get(monitor)
    return math.nan if value is None else float(value)


def best_runs(paths: Sequence[Path]) -> dict[str, tuple[Path, dict]]:
    """Task -> (run folder, results) of its completed run with submission files and the best monitor."""
    best: dict[str, tuple[Path, dict]] = {}
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"{path} does not exist; give run or multirun folders (e.g. outputs/multirun)")
        for file in sorted(path.rglob(RESULTS_FILE)) if path.is_dir() else [path]:
            run_dir = file.parent
            record = read_results(run_dir)
            files = (record.get("task_info") or {}).get("submission_files", [])
            if record.get("status") != COMPLETED or not any((run_dir / name).is_file() for name in files):
                continue
            value = monitored_value(record)
            task = record.get("task")
            if task not in best or (not math.isnan(value) and not value <= monitored_value(best[task][1])):
                best[task] = (run_dir, record)
    return best


def write_submission_set(paths: Sequence[Path], out: Path) -> tuple[Path, list[str]]:
    """Copy the best runs' files into ``out``, zip them; return the zip and the missing files."""
    chosen = best_runs(paths)
    out.mkdir(parents=True, exist_ok=True)
    selection, missing = {}, []
    for name, task in GLUE_SUBMISSION.items():
        run_dir, record = chosen.get(task, (None, {}))
        if run_dir is None or not (run_dir / name).is_file():
            missing.append(name)
            continue
        shutil.copyfile(run_dir / name, out / name)
        monitor = record["task_info"]["monitor"]
        selection[name] = {"task": task, "run": str(run_dir), monitor: monitored_value(record)}
    write_atomic(
        out / "selection.json", json.dumps({"files": selection, "missing": missing}, indent=2) + "\n"
    )
    archive = out.with_name(f"{out.name}.zip")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        for name in selection:
            zipped.write(out / name, arcname=name)
    return archive, missing


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m peft_glue.submit", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, help="run or multirun folders (searched recursively)")
    parser.add_argument("--out", type=Path, default=Path("submission"), help="output folder (and <out>.zip)")
    args = parser.parse_args(argv)
    try:
        archive, missing = write_submission_set(args.paths, args.out)
    except UserError as error:
        exit_with(str(error))
    print(f"wrote {args.out}/ and {archive}")
    if missing:
        tasks = sorted({GLUE_SUBMISSION[name] for name in missing})
        print(
            f"incomplete: no run gives {', '.join(missing)} (tasks: {', '.join(tasks)}); "
            "the GLUE server accepts only the complete set",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()

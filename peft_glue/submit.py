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
from peft_glue.record import COMPLETED, RunResults, read_results, write_atomic
from peft_glue.results.runs import find_results

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


def best_runs(paths: Sequence[Path]) -> dict[str, tuple[Path, RunResults]]:
    """Task -> (run folder, results) of its completed run with submission files and the best monitor."""
    best: dict[str, tuple[Path, RunResults]] = {}
    for file in find_results(paths):
        run_dir, results = file.parent, read_results(file)
        files = results.task_info.submission_files if results.task_info else []
        own = bool(results.task_info and results.task_info.dataset)  # a dataset of one's own: not GLUE's
        if results.status != COMPLETED or own or not any((run_dir / name).is_file() for name in files):
            continue
        value, task = results.monitor_value, results.task
        if task not in best or (not math.isnan(value) and not value <= best[task][1].monitor_value):
            best[task] = (run_dir, results)
    if not best:
        raise UserError(f"no completed run with submission files below {', '.join(map(str, paths))}")
    return best


def write_submission_set(paths: Sequence[Path], out: Path) -> tuple[Path, list[str]]:
    """Copy the best runs' files into ``out``, zip them; return the zip and the missing files."""
    chosen = best_runs(paths)
    out.mkdir(parents=True, exist_ok=True)
    selection, missing = {}, []
    for name, task in GLUE_SUBMISSION.items():
        run_dir, results = chosen.get(task, (None, None))
        if run_dir is None or not (run_dir / name).is_file():
            missing.append(name)
            continue
        shutil.copyfile(run_dir / name, out / name)
        selection[name] = {"task": task, "run": str(run_dir), results.monitor: results.monitor_value}
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

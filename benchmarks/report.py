"""bench_train's report: the per-variant summary and ratios, written as JSON and as a Markdown table."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.flops import FlopModel
from benchmarks.variants import VARIANTS


def summarise(
    runs: dict[str, list[dict]],
    errors: dict[str, list[str]],
    examples: dict[str, int],
    lengths: list[int],
    framework_shapes: list[tuple[int, int]] | None,
    flop_model: FlopModel,
    peak: dict,
) -> dict[str, dict]:
    """Per variant: the median and every repeat's samples/s, peak memory, useful and executed FLOP/s and
    their share of the matmul peak. ``examples``: how many examples each variant trained on;
    ``framework_shapes``: the (batch size, padded length) of (a)'s batches, None if unknown."""
    summary: dict[str, dict] = {}
    for name, results in runs.items():
        variant = VARIANTS[name]
        entry: dict[str, Any] = {
            "letter": variant.letter,
            "description": variant.description,
            "errors": errors[name],
        }
        summary[name] = entry
        if not results:
            continue
        count = examples[name]
        values = [r["samples_per_second"] for r in results]
        median = statistics.median(values)
        precision = results[0].get("precision") or "unknown"
        shapes = framework_shapes if variant.framework is not None else results[0].get("batch_shapes")
        useful = flop_model.useful(lengths[:count])
        executed = flop_model.executed(shapes) if shapes else None
        peak_flops = peak["bf16"] if "bf16" in precision else peak["fp32"]
        seconds_at_median = count / median
        entry.update(
            precision=precision,
            examples=count,
            median_samples_per_second=median,
            samples_per_second=values,
            seconds=[r["seconds"] for r in results],
            peak_memory_mb=max(
                (r["peak_memory_mb"] for r in results if r.get("peak_memory_mb")), default=None
            ),
            useful_tokens=sum(lengths[:count]),
            executed_tokens=sum(count * length for count, length in shapes) if shapes else None,
            useful_flops=useful,
            executed_flops=executed,
            useful_flop_per_second=useful / seconds_at_median,
            executed_flop_per_second=executed / seconds_at_median if executed else None,
            peak_flop_per_second=peak_flops,
            useful_fraction_of_peak=useful / seconds_at_median / peak_flops,
            executed_fraction_of_peak=executed / seconds_at_median / peak_flops if executed else None,
        )
        entry["train_loss"] = [r["train_loss"] for r in results]
        steady = [r.get("steady_samples_per_second") for r in results]
        entry["steady_samples_per_second"] = steady if all(steady) else None
        if variant.framework is not None:
            entry["command"] = results[0]["command"]
            entry["frozen_bf16"] = results[0].get("frozen_bf16")
            if variant.compiled:
                compile_seconds = [r["compile_seconds"] for r in results]
                pairs = zip(results, compile_seconds, strict=True)
                uncompiled = [r["samples"] / (r["seconds"] - seconds) for r, seconds in pairs]
                entry.update(compile_seconds=compile_seconds, uncompiled_samples_per_second=uncompiled)
        else:
            entry["trainer_samples_per_second"] = [r["trainer_samples_per_second"] for r in results]
            entry["slice_fingerprint"] = results[0]["slice_fingerprint"]
    return summary


def ratios(summary: dict[str, dict], steady: bool = False) -> dict[str, float]:
    """Each framework variant's median samples/s divided by every other variant's: above 1 means it trains
    faster. Whole runs (``steady`` False): first steps in, a compiled variant's compile time out;
    ``steady``: every variant's last epoch (the same examples as its first, no one-off costs)."""
    speed = {name: run_speed(entry, steady) for name, entry in summary.items()}
    out = {}
    for name, ours in speed.items():
        if ours is None or VARIANTS[name].framework is None:
            continue
        for other, theirs in speed.items():
            if other != name and theirs:
                out[f"{name}/{other}"] = ours / theirs
    return out


def run_speed(entry: dict, steady: bool = False) -> float | None:
    """Median samples/s: of the steady state (``steady``: the last epoch), or of the whole run with a
    compiled variant's compile time taken out."""
    values = entry.get("steady_samples_per_second" if steady else "uncompiled_samples_per_second")
    if values:
        return statistics.median(values)
    return None if steady else entry.get("median_samples_per_second")


def compile_break_even(summary: dict[str, dict], batch_size: int) -> dict | None:
    """How many training steps a compiled run needs before its one-off cost is paid back by its faster
    steps, against the same run eager ((a)): extra one-off seconds / (eager - compiled seconds per step in
    the steady state, the last epoch). A run's one-off seconds: its train seconds beyond its samples at its
    steady speed (compiling, and first steps' costs that Dynamo's compile time misses). Cold: the first repeat
    (Inductor's on-disk cache empty, if it was); warm: the median of later repeats."""
    eager, compiled = summary.get("framework", {}), summary.get("framework_compiled", {})
    if not eager.get("steady_samples_per_second") or not compiled.get("steady_samples_per_second"):
        return None

    def one_off(entry: dict) -> list[float]:
        steady = entry["steady_samples_per_second"]
        runs = zip(entry["seconds"], entry["samples_per_second"], steady, strict=True)
        return [seconds * (1 - speed / steady) for seconds, speed, steady in runs]

    eager_step = batch_size / run_speed(eager, steady=True)
    compiled_step = batch_size / run_speed(compiled, steady=True)
    saved = eager_step - compiled_step
    extra = [seconds - statistics.median(one_off(eager)) for seconds in one_off(compiled)]
    warm = statistics.median(extra[1:]) if len(extra) > 1 else None
    return {
        "eager_seconds_per_step": eager_step,
        "compiled_seconds_per_step": compiled_step,
        "compile_seconds_cold": compiled["compile_seconds"][0],
        "one_off_seconds_cold": extra[0],
        "one_off_seconds_warm": warm,
        "steps_cold": extra[0] / saved if saved > 0 else None,  # None: compiling never pays
        "steps_warm": warm / saved if saved > 0 and warm is not None else None,
    }


def fmt(value: float | None, digits: int = 1, scale: float = 1.0, suffix: str = "") -> str:
    return "–" if value is None else f"{value / scale:,.{digits}f}{suffix}"


def markdown(report: dict) -> str:
    """The report as a Markdown page: set-up, machine, slice, and one table row per variant."""
    cfg, machine, peak, data = report["config"], report["machine"], report["matmul_peak"], report["slice"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    yes_no = {True: "yes", False: "no"}
    same = {True: "same examples", False: "DIFFERENT examples", None: "not checked"}[
        data["framework_matches"]
    ]
    lines = [
        f"# Training throughput: {cfg['task']}, {cfg['method']} ({cfg.get('model', 'minilm')}, "
        f"batch {cfg['batch_size']}, seed {cfg['seed']}, {cfg.get('epochs', 1)} epochs)",
        "",
        f"- Command: `{report['command']}`",
        f"- Date: {report['started']}",
        f"- Machine: {machine['cpu_model']}, {machine['cpu_cores']} cores ({peak['threads']} torch threads), "
        f"device {peak['device']}; avx512_bf16: {yes_no[machine['avx512_bf16']]}, "
        f"amx_bf16: {yes_no[machine['amx_bf16']]}",
        f"- Versions: python {machine['python']}, {versions}",
        f"- Matmul peak ({peak['size']}x{peak['size']}, best of 5): "
        f"fp32 {fmt(peak['fp32'], 1, 1e9)} GFLOP/s, bf16 {fmt(peak['bf16'], 1, 1e9)} GFLOP/s",
        f"- Slice: {data['examples']} examples of {cfg['task']} train, {data['real_tokens']:,} real tokens "
        f"(mean {data['mean_length']:.1f}, max {data['max_length']}), fingerprint {data['fingerprint']}; "
        f"framework's own loader: {same}",
        f"- Repeats: {cfg['repeats']}, variants interleaved; median samples/s shown",
        "",
        "| | variant | precision | examples | median samples/s | all repeats | steady samples/s | (a) ÷ this "
        "| peak MB "
        "| useful GFLOP/s | % peak | executed GFLOP/s | % peak |",
        "|---|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ratio = report["ratios"]
    for name, entry in report["variants"].items():
        if "median_samples_per_second" not in entry:
            error = "; ".join(entry["errors"])[:200].replace("|", "\\|")
            lines.append(f"| {entry['letter']} | {name} | failed: {error} |")
            continue
        values = ", ".join(fmt(v) for v in entry["samples_per_second"])
        lines.append(
            f"| {entry['letter']} | {name} | {entry['precision']} | {entry['examples']} "
            f"| {fmt(entry['median_samples_per_second'])} | {values} "
            f"| {fmt(run_speed(entry, steady=True))} "
            f"| {fmt(ratio.get(f'framework/{name}'), 2, suffix='x') if name != 'framework' else '1.00x'} "
            f"| {fmt(entry['peak_memory_mb'], 0)} "
            f"| {fmt(entry['useful_flop_per_second'], 2, 1e9)} "
            f"| {fmt(entry['useful_fraction_of_peak'], 1, 0.01)} "
            f"| {fmt(entry['executed_flop_per_second'], 2, 1e9)} "
            f"| {fmt(entry['executed_fraction_of_peak'], 1, 0.01)} |"
        )
    lines += key_ratios(report)
    lines += [
        "",
        "Samples/s: training examples / seconds from the start to the end of the training loop (the "
        "framework's `train_samples_per_second` in results.json; for the baselines a TrainerCallback over "
        "on_train_begin..on_train_end); model loading, tokenization and dataloader setup excluded, first "
        "steps included. Steady samples/s: the last epoch's (the same examples as the first; for the "
        "baselines a TrainerCallback over on_epoch_begin..on_epoch_end), which leaves out one-off costs "
        "(compiling, first allocations), for every variant alike. Peak MB: peak RSS of the variant's own "
        "process (peak CUDA memory allocated on a GPU), the largest over repeats; it includes loading and "
        "tokenizing (the framework also loads the validation and test splits). Useful FLOPs count real "
        "tokens only; executed FLOPs count every padded position the kernels computed (per-batch padded "
        f"length; {cfg['max_length']} for (b)). "
        "Training FLOPs = 3x forward for full fine-tuning; for LoRA/BitFit frozen projections 2x, attention "
        "3x. % peak: against the square-matmul peak at the precision used (bf16 for bf16 runs). See "
        "benchmarks/README.md.",
    ]
    if cfg["padded_examples"] < cfg["examples"]:
        lines += [
            "",
            f"(b) was timed on the first {cfg['padded_examples']} examples of the slice: every batch is "
            f"padded to {cfg['max_length']} tokens, so its cost per batch does not depend on the sentences "
            "and samples/s from a prefix stands for the whole slice.",
        ]
    return "\n".join(lines) + "\n"


KEY_RATIOS = {  # (numerator, denominator, what it answers)
    ("framework", "hf_dynamic"): "default vs tuned HF Trainer in fp32 (goal on AMX: >= 2x)",
    ("framework", "hf_dynamic_bf16"): "default vs tuned HF Trainer in bf16 (goal on AMX: >= 1.4x)",
    ("framework_compiled", "hf_dynamic"): "compiled vs HF fp32",
    ("framework_compiled", "hf_dynamic_bf16"): "compiled vs HF bf16",
    ("framework", "framework_today"): "frozen weights in bf16 vs cast at every step",
    ("framework_compiled", "framework"): "compiled vs eager",
    ("framework_fp32", "hf_dynamic"): "framework fp32 vs HF fp32 (equal precision)",
}


def key_ratios(report: dict) -> list[str]:
    """The ratios the issue asks about, whole runs and steady state, and the compile break-even, as
    Markdown lines."""
    steady = report.get("steady_ratios", {})
    lines = ["", "| ratio | what | whole run | steady state |", "|---|---|---:|---:|"]
    for (ours, theirs), what in KEY_RATIOS.items():
        key = f"{ours}/{theirs}"
        if key in report["ratios"]:
            whole, steady_ratio = report["ratios"][key], fmt(steady.get(key), 2, suffix="x")
            lines.append(f"| {ours} / {theirs} | {what} | {whole:.2f}x | {steady_ratio} |")
    even = report.get("compile_break_even")
    if even:
        steps = {k: "never" if even[k] is None else f"{even[k]:,.0f}" for k in ("steps_cold", "steps_warm")}
        if even["one_off_seconds_warm"] is None:  # one repeat: no warm run to tell
            steps["steps_warm"] = "–"
        eager_ms, compiled_ms = (
            1000 * even["eager_seconds_per_step"],
            1000 * even["compiled_seconds_per_step"],
        )
        lines += [
            "",
            f"Compile break-even: {fmt(even['one_off_seconds_cold'])} s of one-off cost beyond the eager "
            f"run's (first repeat, {fmt(even['compile_seconds_cold'])} s of it compiling; later repeats "
            f"{fmt(even['one_off_seconds_warm'])} s with Inductor's cache) against "
            f"{eager_ms - compiled_ms:.1f} ms saved a step in the steady state ({eager_ms:.1f} -> "
            f"{compiled_ms:.1f} ms): pays back after {steps['steps_cold']} steps ({steps['steps_warm']} "
            "with a warm cache).",
        ]
    return lines if len(lines) > 3 else []


def write_report(report: dict, json_path: Path) -> str:
    """Write the report to ``json_path`` and its Markdown table next to it (.md); returns the table."""
    md_path = json_path.with_suffix(".md")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    md_path.write_text(text)
    return text

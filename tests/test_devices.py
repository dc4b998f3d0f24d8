"""Sweeps that fill a node's GPUs: what a job asks for (``resources``) is checked before any job runs,
joblib's jobs take the GPUs in turn, and Hydra's Ray launcher gives each job its own cores and GPU (faked
here: Ray hands out GPU ids it was told about, and a sitecustomize makes torch see four GPUs in every
process)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch

from peft_glue.training import config, distributed
from peft_glue.training.config import check_command_line
from peft_glue.training.devices import place_job, reserved_cpus
from peft_glue.training.schema import check_resources

from .conftest import compose_cfg, run_cli, tiny_overrides

FAKE_FOUR_GPUS = """\
import torch
torch.cuda.is_available = lambda: True
torch.cuda.device_count = lambda: 4
torch.cuda.get_device_name = lambda *args, **kwargs: "Faked GPU"
torch.cuda.is_bf16_supported = lambda *args, **kwargs: True
torch.cuda.reset_peak_memory_stats = lambda *args, **kwargs: None
torch.cuda.max_memory_allocated = lambda *args, **kwargs: 0
"""


def results_of(sweep: Path) -> list[dict]:
    return [json.loads(path.read_text()) for path in sorted(sweep.glob("*/results.json"))]


@pytest.fixture
def cpu_only(monkeypatch):
    """A machine without GPUs, also where the tests run on one."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


# ------------------------------------------------------------------------------------- resources refused
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["resources.num_gpus=0.25"],
            "resources.num_gpus=0.25 asks for a share of a GPU, and this machine has no",
        ),
        (
            ["-m", "resources.num_gpus=0,1"],
            "resources.num_gpus=1 asks for 1 GPU(s), and this machine has no GPU",
        ),
        (
            # the local Ray node offers 2 GPUs; the sweep's second value asks for 4
            ["-m", "hydra/launcher=ray", "hydra.launcher.ray.init.num_gpus=2", "resources.num_gpus=1,4"],
            "resources.num_gpus=4 asks for more GPUs than this machine has (2): e.g. resources.num_gpus=2",
        ),
        (
            ["-m", "hydra/launcher=ray", "resources.num_cpus=4096"],
            "resources.num_cpus=4096 asks for more cores",
        ),
        (["resources.num_cpus=0"], "resources.num_cpus=0.0 is not valid: expected a number > 0"),
        (
            ["-m", "hydra/launcher=ray", "hydra.launcher.ray.init.num_gpus=4", "resources.num_gpus=1.5"],
            "resources.num_gpus=1.5 is not valid: expected 0, a share of one GPU (0.25) or a whole number",
        ),
    ],
)
def test_impossible_resources_are_one_line_before_any_job(argv, message, cpu_only, capsys):
    with pytest.raises(SystemExit) as stop:
        check_command_line(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code != 0 and len(lines) == 1
    assert lines[0].startswith(f"error: {message}"), lines


@pytest.mark.parametrize(
    "argv",
    [
        ["-m", "hydra/launcher=ray", "hydra.launcher.ray.init.num_gpus=1", "resources.num_gpus=0.25"],
        ["-m", "hydra/launcher=ray", "hydra.launcher.ray.init.num_gpus=2", "resources.num_gpus=1,2"],
        [
            "-m",
            "hydra/launcher=ray",
            "hydra.launcher.ray.init.address=auto",
            "resources.num_gpus=8",
        ],  # cluster
        ["-m", "hydra/launcher=ray", "resources.num_cpus=1", "resources.num_gpus=0"],
    ],
)
def test_resources_that_fit_pass_the_preflight_check(argv, cpu_only, monkeypatch):
    monkeypatch.setattr(config, "ray_cluster_found", lambda: True)  # the cluster case: as if one ran here
    check_command_line(argv)  # returns: no SystemExit


def test_ray_launcher_without_its_plugin_is_one_line(monkeypatch, capsys):
    monkeypatch.setattr(config, "RAY_PLUGIN", "hydra_plugins.not_installed_here")  # as without peft_glue[ray]
    with pytest.raises(SystemExit):
        check_command_line(["-m", "hydra/launcher=ray", "method.r=1,2"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        "error: hydra/launcher=ray needs a Hydra plugin that is not installed: pip install 'peft_glue[ray]'"
    ]


def test_a_ray_cluster_that_does_not_answer_is_one_line(monkeypatch, capsys):
    """Joining a cluster that is not there: one line naming the address and the fix, before any job."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with socket.socket() as listener:  # a port that was free: nothing answers there once it is closed
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        with pytest.raises(SystemExit):
            check_command_line(["-m", "hydra/launcher=ray", f"hydra.launcher.ray.init.address={address}"])
        assert capsys.readouterr().err.strip().splitlines() == [
            f"error: hydra.launcher.ray.init.address={address}: nothing answers at 127.0.0.1:{port}; "
            f"start the cluster there (`ray start --head --port={port}`), fix the address, or leave it out "
            "to start Ray here"
        ]
    monkeypatch.setattr(config, "ray_cluster_found", lambda: False)
    with pytest.raises(SystemExit):
        check_command_line(["-m", "hydra/launcher=ray", "hydra.launcher.ray.init.address=auto"])
    assert "no Ray cluster was started on this machine" in capsys.readouterr().err
    with socket.socket() as listener:  # a cluster that answers passes
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        check_command_line(["-m", "hydra/launcher=ray", f"hydra.launcher.ray.init.address=127.0.0.1:{port}"])


def test_resources_fit_a_node_with_gpus():
    check_resources(num_cpus=2, num_gpus=0.25, cores=4, gpus=1)  # four jobs share the GPU
    check_resources(num_cpus=None, num_gpus=8, cores=4, gpus=8)
    with pytest.raises(Exception, match="more GPUs than this machine has \\(8\\)"):
        check_resources(num_cpus=None, num_gpus=9, cores=4, gpus=8)


# --------------------------------------------------------------------------------- threads and devices
def test_threads_follow_the_cores_a_job_asked_for(tiny_bert, tiny_glue, tmp_path):
    cfg = compose_cfg([*tiny_overrides(tiny_bert, tiny_glue), "resources.num_cpus=3"], tmp_path)
    assert reserved_cpus(cfg.resources, None) == 3
    ray_cfg = compose_cfg([*tiny_overrides(tiny_bert, tiny_glue), "hydra/launcher=ray"], tmp_path)
    assert ray_cfg.hydra.launcher.ray.remote == {"num_cpus": 1, "num_gpus": 0}  # Ray's reservation, resolved
    assert reserved_cpus(ray_cfg.resources, ray_cfg.hydra.launcher) == 1
    assert distributed.threads_per_job(None, 8, cpus=3) == 3  # asked: not the cores / jobs
    assert distributed.threads_per_job(2, 8, cpus=3) == 2  # `threads` set by hand wins


def test_joblib_jobs_take_the_gpus_in_turn(tiny_bert, tiny_glue, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    chosen = []
    for job in range(6):
        cfg = compose_cfg(tiny_overrides(tiny_bert, tiny_glue), tmp_path)
        place_job(cfg, job)
        chosen.append(list(cfg.trainer.devices))
    assert chosen == [[0], [1], [2], [3], [0], [1]]
    for kept in (["trainer.accelerator=cpu"], ["trainer=ddp", "trainer.devices=2"]):
        cfg = compose_cfg([*tiny_overrides(tiny_bert, tiny_glue), *kept], tmp_path)
        devices = cfg.trainer.devices
        place_job(cfg, 1)
        assert cfg.trainer.devices == devices  # not a one-GPU job: the trainer's own choice
    cfg = compose_cfg(tiny_overrides(tiny_bert, tiny_glue), tmp_path)
    place_job(cfg, None)  # a single run keeps the first device
    assert cfg.trainer.devices == 1


@pytest.mark.slow
def test_joblib_sweep_on_four_faked_gpus_gives_each_job_its_own(tiny_bert, tiny_glue, tmp_path):
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(FAKE_FOUR_GPUS)  # every process of the sweep sees 4 GPUs
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "method=lora", "method.r=1,2,4,8",
        *tiny_overrides(tiny_bert, tiny_glue), "dry_run=true", f"hydra.sweep.dir={sweep}",
        cwd=tmp_path, env={"PYTHONPATH": str(fake)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert [(r["method"]["r"], r["devices"]) for r in results_of(sweep)] == [
        (1, [0]),
        (2, [1]),
        (4, [2]),
        (8, [3]),
    ]


# ------------------------------------------------------------------------------------------------- Ray
@pytest.mark.slow
def test_ray_launcher_runs_jobs_each_on_its_own_cores_and_gpu(tiny_bert, tiny_glue, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    sweep = tmp_path / "sweep"
    result = run_cli(
        "-m", "hydra/launcher=ray", "hydra.launcher.ray.init.num_cpus=2",
        "hydra.launcher.ray.init.num_gpus=2",  # Ray hands out two GPU ids; torch sees none: training on CPU
        "resources.num_cpus=1", "resources.num_gpus=1", "method=lora", "data.validation_size=8,10,1000",
        *tiny_overrides(tiny_bert, tiny_glue), "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )  # fmt: skip
    # a validation split larger than the 64 training examples fails by design: listed, exit non-zero
    assert result.returncode == 1, result.stderr[-3000:]
    assert "error: 1 job(s) failed: 2_" in result.stderr and "gives 1000 of 64" in result.stderr
    results = results_of(sweep)
    expected = [(8, "completed"), (10, "completed"), (1000, "failed")]
    assert [(r["validation_size"], r["status"]) for r in results] == expected
    assert all(path.parent.parent == sweep for path in sweep.glob("*/results.json"))  # the usual sweep folder
    completed = results[:2]
    assert sorted(r["visible_devices"] for r in completed) == ["0", "1"]  # each job its own GPU, side by side
    assert all(r["threads"] == 1 and r["device"] == "cpu" for r in completed)  # threads = its 1 core
    assert all(r["val"]["best"]["f1"] >= 0 and r["test"]["f1"] >= 0 for r in completed)


# ------------------------------------------------------------------------------------ the GPU check, dry
@pytest.mark.slow
def test_gpu_check_dry_runs_every_part(tmp_path):
    """`python -m benchmarks.gpu_check --dry`: every part's code path on the CPU with a tiny model."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher")
    from benchmarks.gpu_check import parse_args, run_parts
    from tests.conftest import shared_glue

    args = parse_args(["--dry", "--glue-dir", str(shared_glue()), "--examples", "48"])
    _, rows = run_parts(args, tmp_path)
    assert not [row for row in rows if row.setting == "failed"], rows
    ours, peer, ratio = (row.facts for row in rows if row.part == "throughput")
    assert ratio["ratio"] == pytest.approx(ours["samples_per_second"] / peer["samples_per_second"])
    ddp = next(row.facts for row in rows if row.part == "ddp")
    assert ddp == {"ranks": 2, "train_samples": 48}  # both ranks together: every example once
    ray = next(row.facts for row in rows if row.part == "ray" and row.setting.startswith("ratio"))
    assert ray == {"completed": {"one after another": 4, "packed": 4}, "gpu_ids": ["0"]}  # four on one GPU

"""peft_glue as an installed library: its configs inside the package, the console commands, and a user's
own config folder added with --config-dir or hydra.searchpath."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from peft_glue.training.config import check_command_line
from peft_glue.training.config_paths import CONFIG_DIR, CONFIG_PATH, config_folders, user_searchpath
from tests.conftest import REPO, run_cli, tiny_overrides

COMMANDS = {
    "peft-glue-train": "peft_glue.train:main",
    "peft-glue-predict": "peft_glue.predict:main",
    "peft-glue-export": "peft_glue.export:main",
    "peft-glue-report": "peft_glue.report:main",
    "peft-glue-analyze": "peft_glue.analyze:main",
    "peft-glue-reproduce": "peft_glue.reproduce:main",
}


def test_config_dir_is_the_real_folder():
    assert (CONFIG_DIR / "config.yaml").is_file()
    assert (CONFIG_DIR / "method" / "lora.yaml").is_file()
    # run from this checkout, it is the checkout's conf/ (also when another copy of peft_glue is installed)
    assert REPO / "conf" == CONFIG_DIR


@pytest.mark.skipif(importlib.util.find_spec("peft_glue.conf") is None, reason="peft_glue not installed")
def test_installed_package_holds_the_configs():
    assert CONFIG_PATH == "pkg://peft_glue.conf"
    with initialize_config_module("peft_glue.conf", version_base="1.3"):
        cfg = compose("config", overrides=["logger=[csv,wandb,mlflow]", "method=bitfit"])
    assert set(cfg.logger) == {"csv", "wandb", "mlflow"}
    assert cfg.method._target_ == "peft_glue.training.methods.BitFit"


def test_console_commands_are_declared():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"] == COMMANDS
    declared = {ep.name: ep.value for ep in entry_points(group="console_scripts") if ep.name in COMMANDS}
    if not declared:
        pytest.skip("peft_glue's entry points are not installed (pip install -e .)")
    if declared.keys() < COMMANDS.keys():  # an install of an older pyproject.toml (.ci/wheel-check runs each)
        pytest.skip(f"installed before {sorted(COMMANDS.keys() - declared.keys())} existed: pip install -e .")
    assert declared == COMMANDS


@pytest.mark.parametrize(
    "module", ["peft_glue.predict", "peft_glue.export", "peft_glue.report", "peft_glue.analyze"]
)
def test_python_m_still_works(module, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


@pytest.fixture
def user_conf(tmp_path) -> Path:
    """A user's own config folder: a LoRA variant and a task that reuses MRPC with other defaults."""
    folder = tmp_path / "my_conf"
    (folder / "method").mkdir(parents=True)
    (folder / "method" / "mine.yaml").write_text("defaults:\n  - lora\n  - _self_\nr: 2\nalpha: 4\n")
    return folder


def test_searchpath_entries_from_the_command_line(user_conf):
    overrides = [f"hydra.searchpath=[file://{user_conf},pkg://peft_glue]", "a=1"]
    entries = user_searchpath(str(user_conf), overrides)
    assert entries == [f"file://{user_conf}", f"file://{user_conf}", "pkg://peft_glue"]
    assert config_folders(entries)[:2] == [CONFIG_DIR, user_conf]


@pytest.mark.parametrize("how", ["config-dir", "searchpath"])
def test_preflight_check_knows_the_users_configs(user_conf, how, capsys):
    extra = ["--config-dir", str(user_conf)] if how == "config-dir" else [f"hydra.searchpath=[{user_conf}]"]
    check_command_line([*extra, "method=mine"])  # no SystemExit
    check_command_line(["-m", *extra, "method=lora,mine"])
    with pytest.raises(SystemExit):
        check_command_line([*extra, "method=nope"])
    error = capsys.readouterr().err
    assert "unknown method 'nope'; choose one of: " in error and all(m in error for m in ("full, ", "mine"))
    with pytest.raises(SystemExit):  # without the folder, `mine` is unknown
        check_command_line(["method=mine"])
    assert "unknown method 'mine'" in capsys.readouterr().err


def test_missing_config_dir_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        check_command_line(["--config-dir", str(tmp_path / "nowhere"), "method=lora"])
    assert "no such folder" in capsys.readouterr().err


def test_a_run_with_the_users_method(user_conf, tiny_bert, tiny_glue, tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(
        "--config-dir",
        str(user_conf),
        *tiny_overrides(tiny_bert, tiny_glue),
        "method=mine",
        "dry_run=true",
        f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "dry_run"
    assert results["method"]["name"] == "mine"
    assert (results["method"]["r"], results["method"]["alpha"]) == (2, 4)


def test_ddp_ranks_get_the_users_config_folders(user_conf, tmp_path):
    from hydra.conf import ConfigSourceInfo
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict, read_write

    from peft_glue.training import distributed
    from tests.conftest import compose_cfg

    cfg = compose_cfg(["method=lora"], tmp_path / "run")
    command, _ = distributed.rank_command(local_rank=1)
    assert not [arg for arg in command if "config-dir" in arg or "searchpath" in arg]
    sources, hydra_overrides = cfg.hydra.runtime.config_sources, cfg.hydra.overrides.hydra
    with read_write(sources), open_dict(sources), read_write(hydra_overrides):
        source = ConfigSourceInfo(path=f"file://{user_conf}", schema="file", provider="command-line")
        sources.insert(0, source)
        hydra_overrides.append(f"hydra.searchpath=[{user_conf}]")
    HydraConfig.instance().set_config(cfg)
    command, _ = distributed.rank_command(local_rank=1)
    assert command[-2:] == [f"--config-dir={user_conf}", f"hydra.searchpath=[{user_conf}]"]

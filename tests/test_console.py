"""The `detectcrop` console command: subcommands = the `python -m` entry points, help without TensorFlow, quiet logs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from detectcrop import environment, zoo
from pipelines import console

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=env, check=False)


def test_every_parser_builds_without_importing_tensorflow():
    code = (
        "import importlib, sys\n"
        "from pipelines import console\n"
        "console.get_args_parser().format_help()\n"
        "for name, command in console.COMMANDS.items():\n"
        "    console.subcommand_parser(name).format_help()\n"
        "    importlib.import_module(command.module).get_args_parser().format_help()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tensorflow_hub')))\n"
    )
    proc = _run("-c", code)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_help_answers_under_the_console_name():
    top = _run("-m", "pipelines.console", "--help")
    assert top.returncode == 0 and all(name in top.stdout for name in console.COMMANDS)
    sub = _run("-m", "pipelines.console", "zoo", "fetch", "--help")
    assert sub.returncode == 0 and sub.stdout.startswith("usage: detectcrop zoo fetch")
    bad = _run("-m", "pipelines.console", "crops", "--no-such-flag")
    assert bad.returncode == 2 and "usage: detectcrop crops" in bad.stderr
    unknown = _run("-m", "pipelines.console", "nope")
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr


def test_each_subcommand_module_has_the_entry_point_contract():
    for name in console.COMMANDS:
        module = console.load(name)
        assert callable(module.get_args_parser) and callable(module.main), name


def test_subcommand_runs_the_same_main(capsys):
    assert console.main(["zoo", "list"]) == 0
    via_console = capsys.readouterr().out
    assert zoo.main(["list"]) == 0
    assert capsys.readouterr().out == via_console


def test_quiet_tensorflow_sets_the_log_level_except_for_debug(monkeypatch):
    monkeypatch.delenv(environment.TF_LOG_ENV, raising=False)
    environment.quiet_tensorflow("DEBUG")
    assert environment.TF_LOG_ENV not in os.environ
    environment.quiet_tensorflow("INFO")
    assert os.environ[environment.TF_LOG_ENV] == "3"
    monkeypatch.setenv(environment.TF_LOG_ENV, "1")  # the user's own setting applies at DEBUG only
    environment.quiet_tensorflow("DEBUG")
    assert os.environ[environment.TF_LOG_ENV] == "1"
    environment.quiet_tensorflow("WARNING")
    assert os.environ[environment.TF_LOG_ENV] == "3"


def test_a_command_that_loads_a_model_prints_no_tensorflow_log_lines(tmp_path):
    """build_crops with the offline detector on one photo: TensorFlow's C++ lines show only with --log-level DEBUG."""
    import cv2

    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "a.jpg"), np.random.default_rng(0).integers(0, 255, (64, 80, 3), np.uint8))
    env = {k: v for k, v in os.environ.items() if k != environment.TF_LOG_ENV}

    def run(out: str, *extra: str, user_level: str | None = None) -> list[str]:
        user_env = env if user_level is None else {**env, environment.TF_LOG_ENV: user_level}
        proc = _run("-m", "pipelines.build_crops", "--input", str(photos), "--output", str(tmp_path / out),
                    "--detector", zoo.OFFLINE_DETECTOR, "--no-progress", *extra, env=user_env)
        assert proc.returncode == 0, proc.stderr
        return [line for line in proc.stderr.splitlines() if environment.is_tensorflow_log_line(line)]

    debug_lines = run("debug", "--log-level", "DEBUG")
    if not debug_lines:
        pytest.skip("TensorFlow printed no log lines on this machine even at DEBUG; nothing to compare")
    assert run("quiet") == []
    for user_level in ("0", "1", "2"):  # whatever the shell sets, the command stays quiet
        assert run(f"quiet{user_level}", user_level=user_level) == [], user_level


def test_readme_lists_the_subcommands():
    import re

    rows = re.findall(r"^\| `([\w-]+)` \| `python -m ([\w.]+)` \|$", (ROOT / "README.md").read_text(), re.M)
    assert dict(rows) == {name: command.entry for name, command in console.COMMANDS.items()}

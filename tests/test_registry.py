"""Pass registry: built-ins, and third-party passes from an installed package's entry point."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from compress.core.errors import CompressError
from compress.pipeline.registry import available_passes, get_pass

PLUGIN = Path(__file__).parent / "plugin"


def test_builtins_registered_with_configs():
    passes = available_passes()
    assert {"finetune_teacher", "convert", "distill", "evaluate"} <= set(passes)
    for name, cls in passes.items():
        assert cls.name == name and cls.Config.model_config.get("extra") == "forbid"


def test_unknown_pass():
    with pytest.raises(CompressError, match="unknown pass 'prun'"):
        get_pass("prun")


def test_passes_command_lists_options(cli):
    code, out, _ = cli("passes")
    assert code == 0
    assert "distill" in out and "temperature" in out and "2.0" in out


@pytest.mark.integration
def test_plugin_package_runs_from_a_recipe(tmp_path, tiny_csv, tiny_teacher_dir):
    """Install tests/plugin as a real package (into a private folder) and run its pass from a recipe."""
    site, source = tmp_path / "site", tmp_path / "plugin"
    shutil.copytree(PLUGIN, source)  # build from a copy: setuptools leaves build/ beside the sources
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    from conftest import tiny_recipe

    recipe = tiny_recipe(tmp_path, tiny_csv, tiny_teacher_dir, [{"name": "hello", "options": {"greeting": "hi"}}])
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    listed = subprocess.run([sys.executable, "-m", "compress", "passes"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0 and "hello" in listed.stdout and "greeting" in listed.stdout
    ran = subprocess.run([sys.executable, "-m", "compress", "run", str(path)], env=env, capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    metrics = yaml.safe_load((tmp_path / "results" / "tiny" / "metrics.json").read_text())
    assert metrics["reports"]["hello"] == {"greeting": "hi", "models": ["teacher"]}

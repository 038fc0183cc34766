"""A non-editable install works on its own, and the tools run the way the docs say.

The wheel test builds ``semantic_sam`` as ``pip install .`` would (without the optional C++ kernel,
to stay fast), installs it into a temporary folder and, in a process that sees only that folder (plus
the environment's site-packages) and runs outside the checkout, loads every config of ``configs/`` and
builds the tiny model.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the build reads: the setup files and the package (not the checkout's build outputs).
BUILD_INPUTS = ("setup.py", "pyproject.toml", "MANIFEST.in")

_CHECK_INSTALLED = r"""
import glob, json, os, sys
site, configs = sys.argv[1], sys.argv[2]
import semantic_sam
from semantic_sam.config import load_config

loaded = {}
for path in sorted(glob.glob(os.path.join(configs, "*.yaml"))):
    cfg = load_config(path)
    loaded[os.path.basename(path)] = cfg.MODEL.DECODER.NAME
model = semantic_sam.build_model(load_config(os.path.join(configs, "semantic_sam_tiny_cpu.yaml")))
modules = {n: getattr(m, "__file__", None) for n, m in sys.modules.items() if n.split(".")[0] == "semantic_sam"}
top_level = sorted({name.split(".")[0] for name in sys.modules} & {"datasets", "tools", "utils", "train_net", "demo"})
print(json.dumps({
    "file": semantic_sam.__file__,
    "modules": modules,
    "configs": loaded,
    "model": type(model).__name__,
    "parameters": sum(p.numel() for p in model.parameters()),
    "top_level": top_level,
}))
"""


def _run(cmd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, **kwargs)


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    env.update(extra)
    return env


@pytest.mark.slow
def test_wheel_installs_a_package_that_loads_every_config_and_builds_a_model(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in BUILD_INPUTS:
        shutil.copy(os.path.join(ROOT, name), src / name)
    shutil.copytree(
        os.path.join(ROOT, "semantic_sam"), src / "semantic_sam", ignore=shutil.ignore_patterns("__pycache__", "*.so")
    )

    env = _env(SEMANTIC_SAM_NO_CPU_KERNEL="1")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    build = _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(tmp_path / "wheel"),
                  str(src)], env=env, cwd=str(tmp_path))
    assert build.returncode == 0, build.stdout + build.stderr
    (wheel,) = glob.glob(str(tmp_path / "wheel" / "semantic_sam-*.whl"))

    # Every non-Python file the package reads at run time is in the wheel.
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    patterns = ("semantic_sam/config_defaults/*.yaml", "semantic_sam/ops/csrc/*.*", "semantic_sam/ops/csrc/cuda/*")
    files = [p for pattern in patterns for p in glob.glob(os.path.join(ROOT, pattern))]
    needed = [os.path.relpath(p, ROOT).replace(os.sep, "/") for p in files]
    assert any(n.endswith("60_evaluation.yaml") for n in needed) and any(n.endswith(".cu") for n in needed)
    assert sorted(set(needed) - names) == []

    site = tmp_path / "site"
    install = _run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), wheel], env=env)
    assert install.returncode == 0, install.stdout + install.stderr

    # Outside the checkout, with only the installed copy on PYTHONPATH.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = _run([sys.executable, "-c", _CHECK_INSTALLED, str(site), os.path.join(ROOT, "configs")],
                env=_env(PYTHONPATH=str(site)), cwd=str(elsewhere))
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["file"].startswith(str(site) + os.sep)
    outside = {name: f for name, f in out["modules"].items() if f and not f.startswith(str(site) + os.sep)}
    assert outside == {}
    expected = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "*.yaml")))
    assert sorted(out["configs"]) == expected and len(expected) >= 5
    assert out["model"] == "SemanticSAM" and out["parameters"] > 0
    assert out["top_level"] == []  # the package imports nothing from the checkout's top-level folders


# (invocation, what its output starts with): the commands the README, docs and tools document.
TOOL_COMMANDS = [
    (["-m", "tools.make_builtin_data", "--help"], "usage:"),
    (["-m", "tools.benchmark", "--help"], "usage:"),
    (["-m", "tools.train_builtin", "--help"], "usage:"),
    (["-m", "tools.max_pick_bounds", "--help"], "usage:"),
    (["tools/max_pick_bounds.py", "--help"], "usage:"),  # imports only the package
]
# Run as files, the tools that import the top-level packages say how to run them instead of failing
# on an import (detectron2's wheel installs a top-level package named ``tools`` of its own).
MODULE_ONLY = ["make_builtin_data", "benchmark", "train_builtin"]


@pytest.mark.slow
def test_tools_run_as_documented_from_the_repository_root():
    for args, start in TOOL_COMMANDS:
        proc = _run([sys.executable, *args], env=_env(), cwd=ROOT)
        assert proc.returncode == 0 and proc.stdout.startswith(start), (args, proc.stderr[-2000:])
    for name in MODULE_ONLY:
        proc = _run([sys.executable, f"tools/{name}.py", "--help"], env=_env(), cwd=ROOT)
        assert proc.returncode == 1, (name, proc.stderr[-2000:])
        assert f"python -m tools.{name}" in proc.stderr, (name, proc.stderr[-2000:])


def test_no_tool_edits_sys_path():
    edits = re.compile(r"sys\.path\.(insert|append|extend)|sys\.path\s*(\+?=|\[)")
    offenders = []
    for path in glob.glob(os.path.join(ROOT, "tools", "**", "*.py"), recursive=True):
        with open(path, encoding="utf-8") as f:
            if edits.search(f.read()):
                offenders.append(os.path.relpath(path, ROOT))
    assert offenders == []

"""acnet_ms installs with pip: every package under acnet_ms/, the pinned dependencies and the extras."""
import glob
import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT


def requirement_lines(name):
    with open(os.path.join(ROOT, name), encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``pip install --no-deps --target`` of a copy of the sources (the checkout is left as it was)."""
    pytest.importorskip("setuptools")  # the build backend: with --no-build-isolation nothing is downloaded
    tmp = tmp_path_factory.mktemp("install")
    src, target = tmp / "src", tmp / "site"
    src.mkdir()
    for path in ["pyproject.toml", "README.md", *glob.glob(os.path.join(ROOT, "requirements*.txt"))]:
        shutil.copy(os.path.join(ROOT, path), src)
    shutil.copytree(os.path.join(ROOT, "acnet_ms"), src / "acnet_ms", ignore=shutil.ignore_patterns("__pycache__"))
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                          "--no-build-isolation", "--no-index", "--target", str(target), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return target


def test_every_package_is_installed_and_imports_from_another_folder(installed, tmp_path):
    packages = sorted(os.path.relpath(os.path.dirname(p), ROOT).replace(os.sep, ".")
                      for p in glob.glob(os.path.join(ROOT, "acnet_ms", "**", "__init__.py"), recursive=True))
    assert "acnet_ms" in packages and "acnet_ms.layers" in packages and "acnet_ms.models" in packages
    for package in packages:
        assert os.path.isfile(os.path.join(installed, *package.split("."), "__init__.py")), package
    assert not os.path.exists(os.path.join(installed, "tests")) and not os.path.exists(os.path.join(installed, "train.py"))

    code = (f"import importlib, acnet_ms\n"
            f"for name in {packages!r}: importlib.import_module(name)\n"
            f"print(acnet_ms.__file__); print(acnet_ms.create_model('src20').__class__.__name__)\n")
    env = dict(os.environ, PYTHONPATH=str(installed))
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    path, model = res.stdout.split()[-2:]
    assert path == os.path.join(str(installed), "acnet_ms", "__init__.py")  # not the checkout's
    assert model


def test_the_metadata_pins_the_requirements_and_offers_the_extras(installed):
    (meta,) = glob.glob(os.path.join(installed, "acnet_ms-*.dist-info", "METADATA"))
    with open(meta, encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    requires = [line[len("Requires-Dist: "):] for line in lines if line.startswith("Requires-Dist: ")]
    pins = requirement_lines("requirements.txt")
    assert {"mindspore==2.8.0", "mindcv==0.3.0", "numpy<2", "pyyaml"} <= set(pins)
    assert set(pins) <= set(requires)
    extras = {line[len("Provides-Extra: "):] for line in lines if line.startswith("Provides-Extra: ")}
    assert extras == {"demo", "study", "onnx", "test"}
    for extra, files in (("demo", ["demo"]), ("study", ["study"]), ("onnx", ["onnx"]),
                         ("test", ["demo", "study", "onnx", "test"])):
        wanted = [r for name in files for r in requirement_lines(f"requirements-{name}.txt")]
        assert wanted
        for requirement in wanted:
            assert f'{requirement}; extra == "{extra}"' in requires, (extra, requirement, requires)

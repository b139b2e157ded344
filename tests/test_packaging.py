"""acnet_ms installs with pip: every package under acnet_ms/, the pinned dependencies and the extras."""
import glob
import os
import shutil
import subprocess
import sys

import pytest
from helpers import ROOT


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


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A fresh venv with acnet_ms installed into it by ``pip install --no-deps .`` (from a copy of the sources).

    Its dependencies (MindSpore, MindCV, scikit-learn, ...) are this environment's: a ``.pth`` file puts this
    environment's site-packages on the new one's path (``venv --system-site-packages`` would give the base
    interpreter's, not this venv's).  No package is downloaded.
    """
    import site
    import sysconfig

    pytest.importorskip("setuptools")
    tmp = tmp_path_factory.mktemp("venv")
    src, env = tmp / "src", tmp / "env"
    src.mkdir()
    for path in ["pyproject.toml", "README.md", *glob.glob(os.path.join(ROOT, "requirements*.txt"))]:
        shutil.copy(os.path.join(ROOT, path), src)
    shutil.copytree(os.path.join(ROOT, "acnet_ms"), src / "acnet_ms", ignore=shutil.ignore_patterns("__pycache__"))
    res = subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(env)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    python = str(env / "bin" / "python")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    ours = [p for p in site.getsitepackages() + [sysconfig.get_paths()["purelib"]] if os.path.isdir(p)]
    with open(os.path.join(purelib, "project_deps.pth"), "w", encoding="utf-8") as f:
        f.write("\n".join(dict.fromkeys(ours)) + "\n")  # plain paths: their own .pth files (an editable acnet_ms) stay out
    res = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                          "--no-build-isolation", "--no-index", str(src)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    shutil.rmtree(src)  # the installed copy is the only one left
    return python, purelib


def run_installed(venv, cwd, *args, timeout=900):
    python, _ = venv
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return subprocess.run([python, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_the_demo_runs_from_an_installed_package_in_another_folder(venv, digits, tmp_path):
    res = run_installed(venv, tmp_path, "-c", "import acnet_ms; print(acnet_ms.__file__)")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == os.path.join(venv[1], "acnet_ms", "__init__.py")  # not the checkout's
    # the demo's data folder, where it looks by default, made beforehand with the digits fixture's small lists
    # (a tenth of the digits; the demo writes the whole set only where it finds none, with the fixture's writer)
    small = tmp_path / "data" / "digits"
    for split in ("train", "val"):
        for line in open(os.path.join(digits, f"{split}_small.txt")):
            rel = line.split()[0]
            (small / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(os.path.join(digits, rel), small / rel)
    (small / ".complete").write_text("")
    res = run_installed(venv, tmp_path, "-m", "acnet_ms.demo", "--epochs", 1)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    assert "| folded plain src20 |" in res.stdout
    assert sorted(os.listdir(tmp_path)) == ["data", "demo_out"]  # outputs under the folder it runs in
    assert os.path.isfile(tmp_path / "demo_out" / "src20_deploy.ckpt")


@pytest.mark.slow
def test_the_study_and_the_programs_start_from_an_installed_package(venv, tmp_path):
    res = run_installed(venv, tmp_path, "-m", "acnet_ms.study", "--help")
    assert res.returncode == 0 and "--per_class" in res.stdout, res.stderr[-3000:]
    code = ("import os; from acnet_ms.study import run_args; args = run_args('d', 'l', 'r', 'acb', 1, 1); "
            "config = args[args.index('--config') + 1]; print(config); assert os.path.isfile(config)")
    res = run_installed(venv, tmp_path, "-c", code)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().startswith(os.path.join(venv[1], "acnet_ms", "configs"))  # the package's data
    for program in ("train", "validate", "convert", "analyze"):
        res = run_installed(venv, tmp_path, "-m", f"acnet_ms.apps.{program}", "--help")
        assert res.returncode == 0 and "usage:" in res.stdout, (program, res.stderr[-3000:])
    assert os.listdir(tmp_path) == []

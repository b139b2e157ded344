"""acnet_ms installs with pip: every package under acnet_ms/, the dependencies as ranges (a supported MindSpore
or MindCV already installed is kept), the extras, and the exact versions the suite runs with (constraints.txt)."""
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


def _normal(requirement):
    """``"mindcv<0.6,>=0.3.0"`` and ``"mindcv>=0.3.0,<0.6"`` alike: the name and the set of its specifiers."""
    import re

    name, specs = re.match(r"([A-Za-z0-9_.-]+)\s*(.*)", requirement).groups()
    return name.lower(), frozenset(spec.strip().replace(" ", "") for spec in specs.split(",") if spec.strip())


def test_the_metadata_asks_for_the_supported_ranges_and_offers_the_extras(installed):
    """The package asks for ranges (the ones acnet_ms.stack checks), not the suite's exact versions."""
    from acnet_ms.stack import SUPPORTED

    (meta,) = glob.glob(os.path.join(installed, "acnet_ms-*.dist-info", "METADATA"))
    with open(meta, encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    requires = [line[len("Requires-Dist: "):] for line in lines if line.startswith("Requires-Dist: ")]
    pins = requirement_lines("requirements.txt")
    ranges = {f"{name}>={low},<{below}" for name, (low, below) in SUPPORTED.items()}
    assert ranges | {"numpy<2", "pyyaml"} == set(pins)
    assert not any("==" in line for line in pins), pins
    assert {_normal(r) for r in pins} <= {_normal(r) for r in requires}
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


def _fake_dist(site, name, version):
    """A distribution's metadata only (what pip's resolver reads of an installed package)."""
    info = site / f"{name}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (info / "INSTALLER").write_text("pip\n")


def _sources(tmp):
    src = tmp / "src"
    src.mkdir()
    for path in ["pyproject.toml", "README.md", *glob.glob(os.path.join(ROOT, "requirements*.txt"))]:
        shutil.copy(os.path.join(ROOT, path), src)
    shutil.copytree(os.path.join(ROOT, "acnet_ms"), src / "acnet_ms", ignore=shutil.ignore_patterns("__pycache__"))
    return src


@pytest.mark.parametrize("mindspore, mindcv, kept", [("2.10.0", "0.5.0", True), ("2.7.2", "0.3.0", True),
                                                     ("2.6.0", "0.3.0", False), ("2.8.0", "0.2.2", False)])
def test_pip_keeps_a_supported_mindspore_and_mindcv_it_finds_installed(tmp_path, mindspore, mindcv, kept):
    """``pip install .`` resolved (a dry run, nothing downloaded) where a MindSpore and MindCV are installed:
    a supported pair is kept (only acnet_ms would be installed); one outside the ranges would be replaced
    (with no index to take another from, the resolution fails naming it)."""
    pytest.importorskip("setuptools")
    site = tmp_path / "site"
    _fake_dist(site, "mindspore", mindspore)
    _fake_dist(site, "mindcv", mindcv)
    report = tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=str(site))  # found before this environment's own MindSpore and MindCV
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check",
                          "--no-build-isolation", "--no-index", "--report", str(report), str(_sources(tmp_path))],
                         capture_output=True, text=True, timeout=300, env=env)
    if kept:
        assert res.returncode == 0, res.stderr[-3000:]
        import json

        installs = [i["metadata"]["name"] for i in json.loads(report.read_text())["install"]]
        assert [name.replace("-", "_") for name in installs] == ["acnet_ms"], installs
    else:
        replaced = "mindspore" if mindspore == "2.6.0" else "mindcv"
        assert res.returncode != 0 and f"satisfies the requirement {replaced}" in res.stderr, res.stderr[-3000:]


def test_make_installs_the_exact_versions_the_suite_runs_with():
    """constraints.txt pins a MindSpore and MindCV pair the project lists as tested, inside the package's ranges,
    and is what make installs from; on the Python its other pins are for, this environment holds them all."""
    from importlib import metadata

    from acnet_ms.stack import SUPPORTED, TESTED, release

    pins = {}
    for line in requirement_lines("constraints.txt"):
        requirement, _, marker = line.partition(";")
        name, version = requirement.strip().split("==")
        pins[name.lower()] = (version, marker.strip())
    assert (pins["mindspore"][0], pins["mindcv"][0]) in TESTED
    for name, (low, below) in SUPPORTED.items():
        assert release(low) <= release(pins[name][0]) < release(below), name
        assert not pins[name][1], name  # on every Python
    makefile = open(os.path.join(ROOT, "Makefile"), encoding="utf-8").read()
    assert '$(PIP) -c constraints.txt -e ".[test]"' in makefile
    here = f'python_version == "{sys.version_info[0]}.{sys.version_info[1]}"'
    for name, (version, marker) in pins.items():
        if not marker or marker == here:
            assert metadata.version(name) == version, (name, metadata.version(name), version)


def test_the_version_program_says_what_it_runs_on_and_whether_that_is_tested():
    from importlib.metadata import version

    import acnet_ms

    res = subprocess.run([sys.executable, "-m", "acnet_ms", "--version"], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    line = res.stdout.strip()
    assert line.startswith(f"acnet_ms {acnet_ms.__version__}, MindSpore {version('mindspore')}, MindCV "
                           f"{version('mindcv')}, Python {sys.version.split()[0]}, CPU; tested: "), line
    res = subprocess.run([sys.executable, "-m", "acnet_ms", "--verzion"], capture_output=True, text=True, timeout=300,
                         cwd=ROOT)
    assert res.returncode == 2 and res.stderr.startswith("usage: python -m acnet_ms --version")


def test_an_untested_stack_is_one_warning_line_and_never_a_refusal(monkeypatch):
    """On a MindSpore/MindCV pair the project has not run (here: its table emptied), every entry point warns in
    one line first and goes on; a pair outside the ranges says which and what is supported."""
    from helpers import run_main

    from acnet_ms import stack

    monkeypatch.setattr(stack, "TESTED", {})
    res = run_main("convert.py", "--help")
    assert res.returncode == 0 and "usage:" in res.stdout
    first = res.stderr.splitlines()[0]
    assert first.startswith("warning: MindSpore ") and "supported, not tested by the project" in first, first
    assert len(res.stderr.splitlines()) == 1
    found = dict(stack.versions(ask_mindspore=False), mindspore="2.6.0", mindcv="0.5.1")
    assert "outside the supported versions: MindSpore 2.6.0 (supported: 2.7.0 to below 2.11)" in stack.warning(found)
    assert stack.warning(dict(found, mindspore="2.10.1")).endswith("before relying on it")
    assert "outside" not in stack.warning(dict(found, mindspore="2.10.1"))
    assert [stack.release(v) for v in ("2.10.0rc1", "2.11", "0.5.0+local")] == [(2, 10, 0), (2, 11, 0), (0, 5, 0)]


def test_the_tested_pairs_are_the_docs_matrix_and_the_readmes_line():
    """Every pair ``python -m acnet_ms --version`` calls tested has its row in docs/compatibility.md's matrix and
    is named in the README's "Tested with" sentence; no row claims a pair the program would warn about."""
    from acnet_ms.stack import TESTED

    doc = open(os.path.join(ROOT, "docs", "compatibility.md"), encoding="utf-8").read()
    rows = {tuple(cell.strip().split(" ")[0] for cell in line.split("|")[1:3])
            for line in doc.splitlines() if line.startswith("| 2.")}
    assert set(TESTED) <= rows, set(TESTED) - rows
    assert not {row for row in rows if row[0][0].isdigit() and "x" not in row[0]} - set(TESTED)
    readme = " ".join(open(os.path.join(ROOT, "README.md"), encoding="utf-8").read().split())
    tested = readme[readme.index("Tested with"):].split("docs/compatibility.md")[0]
    for mindspore, mindcv in TESTED:
        assert mindspore in tested and mindcv in tested, (mindspore, mindcv, tested)

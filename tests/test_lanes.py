"""The suite's lanes (docs/testing.md): ``make test`` (CI) leaves out the zoo lane only, ``make test-all`` runs
everything, and the zoo lane holds what the docs say it holds."""
import os
import re
import subprocess
import sys

from helpers import ROOT


def recipe(target):
    """The pytest command of Makefile target ``target``."""
    text = open(os.path.join(ROOT, "Makefile"), encoding="utf-8").read()
    found = re.search(rf"^{re.escape(target)}: install\n\t(.+)$", text, re.M)
    assert found, target
    return found.group(1)


def collected(*args):
    res = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args,
                          "tests"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return [line for line in res.stdout.splitlines() if "::" in line]


def test_make_test_leaves_out_the_zoo_lane_and_test_all_runs_everything():
    assert recipe("test").endswith('-m "not zoo" tests')
    assert recipe("test-all").endswith("-m pytest -q $(PARALLEL) tests")  # no marker expression
    assert '-m "not slow and not msrun"' in recipe("test-fast")
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert re.search(r"^make test$", ci, re.M)
    assert re.search(r"^    make test-compat$", ci, re.M)  # and the MindCV 0.5.0 lane, when its archive is there


def test_the_zoo_lane_is_the_samples_rest_and_the_largest_families_and_none_of_it_is_fast():
    zoo = collected("-m", "zoo")
    samples = sorted(t.split("::")[0] for t in zoo if "sample_sweep" in t)
    assert samples == [f"tests/test_{k}.py" for k in ("acb", "dbb", "orepa", "rep")], zoo
    assert all(t.endswith("[zoo]") for t in zoo if "sample_sweep" in t)
    families = sorted(re.search(r"\[(\w+)\]$", t).group(1) for t in zoo if "test_mindcv_families" in t)
    assert families == ["dpn92", "hrnet_w32", "inception_v3", "res2net50", "vgg11"]
    assert len(zoo) == len(samples) + len(families)
    fast = set(collected("-m", "not slow and not msrun"))
    assert not fast & set(zoo)
    ci_parts = [t for t in collected("-m", "not zoo") if "sample_sweep" in t]
    assert sorted(ci_parts) == sorted(t.replace("[zoo]", "[ci]") for t in zoo if "sample_sweep" in t)

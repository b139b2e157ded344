"""Public names are a promise: every name any version of the package made public (``tests/public_names.txt``)
still imports; one that moved warns with a FutureWarning naming its new place; a new public name joins the
list (``python tests/test_public_names.py`` adds them)."""
import ast
import glob
import importlib
import os
import subprocess
import sys
import warnings

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SNAPSHOT = os.path.join(ROOT, "tests", "public_names.txt")


def module_names(source, module):
    """A module's public names: its ``__all__`` (read from the module where it is computed), else the
    top-level functions, classes and assignments whose names do not start with ``_``."""
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__"
                                                for t in node.targets):
            try:
                return set(ast.literal_eval(node.value))
            except ValueError:
                return set(importlib.import_module(module).__all__)
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                parts = target.elts if isinstance(target, ast.Tuple) else [target]
                names |= {t.id for t in parts if isinstance(t, ast.Name)}
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {n for n in names if not n.startswith("_")}


def current_names():
    """``{(module, name)}`` of the checkout's public names (private modules, ``_x.py``, left out)."""
    out = set()
    for path in glob.glob(os.path.join(ROOT, "acnet_ms", "**", "*.py"), recursive=True):
        rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        if any(part.startswith("_") and part != "__init__" for part in rel.split(".")):
            continue
        module = rel[:-len(".__init__")] if rel.endswith(".__init__") else rel
        with open(path, encoding="utf-8") as f:
            out |= {(module, n) for n in module_names(f.read(), module)}
    return out


def snapshot():
    with open(SNAPSHOT, encoding="utf-8") as f:
        return {tuple(line.split()) for line in f if line.strip() and not line.startswith("#")}


def test_every_public_name_of_the_package_is_in_the_snapshot():
    missing = sorted(current_names() - snapshot())
    assert not missing, ("public names not in tests/public_names.txt (run `python tests/test_public_names.py` "
                         f"to add them): {[' '.join(m) for m in missing][:20]}")


def test_every_name_ever_public_imports_and_a_moved_one_warns_naming_its_new_place():
    from acnet_ms import _moved

    for module, name in sorted(snapshot()):
        moved = _moved.names_of(module).get(name)
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            value = getattr(importlib.import_module(module), name)
        ours = [str(w.message) for w in seen if issubclass(w.category, FutureWarning) and "acnet_ms" in str(w.message)]
        if moved is None:
            assert not ours, (module, name, ours)
            continue
        assert any(m.startswith(f"{module}.{name} has moved: use ") for m in ours), (module, name, ours)
        if moved[0] != _moved.LEGACY:
            assert value is getattr(importlib.import_module(moved[0]), moved[1]), (module, name)
            assert f"use {moved[0]}.{moved[1]} " in ours[-1]


def test_a_module_that_moved_warns_on_import_and_a_name_it_never_had_is_an_import_error():
    """In a fresh interpreter: each gone module imports with one FutureWarning naming where its names are."""
    from acnet_ms import _moved

    gone = [m for m in _moved.MOVED if importlib.util.find_spec(m.rpartition(".")[0] or m) is not None
            and not os.path.exists(os.path.join(ROOT, *m.split("."))) and
            not os.path.exists(os.path.join(ROOT, *m.split(".")) + ".py")]
    assert {"acnet_ms.fold", "acnet_ms.orepa_spec", "acnet_ms.transform", "acnet_ms.layers.acb"} <= set(gone)
    code = ("import importlib, json, warnings\n"
            "out = {}\n"
            f"for m in {gone!r}:\n"
            "    with warnings.catch_warnings(record=True) as seen:\n"
            "        warnings.simplefilter('always')\n"
            "        importlib.import_module(m)\n"
            "    out[m] = [str(w.message) for w in seen if w.category is FutureWarning]\n"
            "try:\n"
            "    from acnet_ms.fold import no_such_name\n"
            "except ImportError as err:\n"
            "    out['error'] = str(err)\n"
            "print(json.dumps(out))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    import json

    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert "cannot import name 'no_such_name'" in out.pop("error")
    for module, messages in out.items():
        assert [m for m in messages if m.startswith(f"module {module} has moved: its names are in ")], (module,
                                                                                                        messages)


def test_the_old_functions_whose_successors_changed_give_their_old_results():
    """The figures their docstrings gave: DBB's 3 x 3 64 -> 64 ratio 1353 / 576, rep's 10/9 and MobileOne's 37/9,
    1 without branch BNs; rep's kernel check took 1 x 1."""
    from acnet_ms import _legacy

    assert _legacy.train_macs(64, 64, 3)["ratio"] == pytest.approx(1353 / 576)
    assert _legacy.mac_ratio(3) == pytest.approx(10 / 9) and _legacy.mac_ratio(3, num_kxk=4) == pytest.approx(37 / 9)
    assert _legacy.mac_ratio(3, branch_bn=False) == 1.0
    _legacy.rep_check_kernel_size(1)
    with pytest.raises(ValueError, match="ACB: kernel_size must be an odd integer >= 3, got 1"):
        _legacy.acb_check_kernel_size(1)


if __name__ == "__main__":  # add the checkout's new public names to the snapshot
    known = snapshot()
    new = current_names() - known
    with open(SNAPSHOT, encoding="utf-8") as f:
        header = [line for line in f if line.startswith("#")]
    with open(SNAPSHOT, "w", encoding="utf-8") as f:
        f.writelines(header + [f"{m} {n}\n" for m, n in sorted(known | new)])
    print(f"added {len(new)} names to {SNAPSHOT}")

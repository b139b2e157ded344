"""The stack a process runs on: acnet_ms, MindSpore, MindCV, Python and the device target, and whether the
project supports and has tested that combination.

The supported ranges are the package's requirements (``requirements.txt`` says the same; a test holds the two
together).  An untested or unsupported combination is one warning line, never a refusal: on Ascend the
MindSpore release is tied to the CANN toolkit and driver of the machine, so a user cannot pick it to please us.
This module imports neither MindSpore nor MindCV until asked for their versions.
"""
import sys

#: {distribution: (lowest supported release, first release not supported)}, as in requirements.txt
SUPPORTED = {"mindspore": ("2.7.0", "2.11"), "mindcv": ("0.3.0", "0.6")}

_COMPAT_LANE = "make test-compat (the kind contract's PyNative fast lane, the .pth imports, the demo), CPU, Python 3.11"
#: the combinations the project has run, {(MindSpore, MindCV): what ran on them} (docs/compatibility.md)
TESTED = {
    ("2.8.0", "0.3.0"): "the whole test suite (make test), CPU, Python 3.11",
    ("2.8.0", "0.5.0"): _COMPAT_LANE,
    ("2.10.0", "0.3.0"): _COMPAT_LANE,
    ("2.7.2", "0.3.0"): _COMPAT_LANE,
}


def release(version):
    """``"2.10.0rc1"`` -> ``(2, 10, 0)``, ``"2.11"`` -> ``(2, 11, 0)``: the leading numbers of a version string
    (a local or pre-release tail is dropped), for comparing against :data:`SUPPORTED`."""
    parts = []
    for piece in str(version).split("+")[0].split("."):
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) < len(piece):  # "0rc1": a pre-release tail ends the release numbers
            break
    return tuple(parts + [0] * (3 - len(parts)))  # "2.11" is 2.11.0


def _installed(name):
    """The installed version of a distribution, or None."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions(device_target=None, ask_mindspore=True):
    """``{"acnet_ms", "mindspore", "mindcv", "python", "device_target"}``: the installed versions (None where a
    distribution is missing) and the device target (given; else MindSpore's default one, where
    ``ask_mindspore`` lets MindSpore be imported for it)."""
    from . import __version__

    found = {"acnet_ms": __version__, "mindspore": _installed("mindspore"), "mindcv": _installed("mindcv"),
             "python": ".".join(map(str, sys.version_info[:3])), "device_target": device_target}
    if device_target is None and ask_mindspore and found["mindspore"]:
        try:
            import mindspore as ms

            found["device_target"] = ms.get_context("device_target")
        except Exception:  # noqa: BLE001  (an installation that does not import says so elsewhere)
            found["device_target"] = None
    return found


def _unsupported(found):
    """The distributions of ``found`` outside :data:`SUPPORTED`, as ``"MindSpore 2.6.0 (supported: 2.7.0 to
    below 2.11)"`` phrases; missing ones say so."""
    out = []
    for name, (low, below) in SUPPORTED.items():
        label = {"mindspore": "MindSpore", "mindcv": "MindCV"}[name]
        version = found.get(name)
        if version is None:
            out.append(f"{label} not installed")
        elif not release(low) <= release(version) < release(below):
            out.append(f"{label} {version} (supported: {low} to below {below})")
    return out


def _status(found):
    """``(tested, words)``: whether the project ran this MindSpore + MindCV, and what it ran or why not."""
    ran = TESTED.get((found.get("mindspore"), found.get("mindcv")))
    if ran:
        return True, f"tested: {ran}"
    outside = _unsupported(found)
    if outside:
        return False, "outside the supported versions: " + ", ".join(outside)
    return False, "supported, not tested by the project (docs/compatibility.md)"


def describe(found=None):
    """One line: ``acnet_ms 0.1.0, MindSpore 2.8.0, MindCV 0.3.0, Python 3.11.7, CPU; tested: ...``."""
    found = versions() if found is None else found
    device = found.get("device_target") or "no device target"
    return (f"acnet_ms {found['acnet_ms']}, MindSpore {found['mindspore']}, MindCV {found['mindcv']}, "
            f"Python {found['python']}, {device}; {_status(found)[1]}")


def warning(found=None):
    """The warning line for a combination the project has not tested, or None for one it has."""
    found = versions(ask_mindspore=False) if found is None else found
    tested, words = _status(found)
    if tested:
        return None
    return (f"warning: MindSpore {found['mindspore']} with MindCV {found['mindcv']}: {words}; running anyway: "
            f"check a converted model against its training form (validate.py on both) before relying on it")

"""One line for a train step that fails on its first call: what ran (model, kind, AMP level, optimizer,
mode), where it failed (the op, the project's code it failed in) and, only when the device is the
cause, the device."""
import os
import re
import traceback

from ..cli import first_line

PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: MindSpore's wording when an op has no kernel on the device (the device is the cause)
_NO_KERNEL = re.compile(r"unsupported op|not supported on|kernel select failed|can ?not find (a |any )?kernel",
                        re.IGNORECASE)
#: MindSpore names the op a check failed in: "For primitive[AddN], ...", "For 'Conv2D', ..."
_OP = re.compile(r"For (?:primitive\[|')(\w+)")


def device_is_cause(err):
    """Whether ``err`` says an op has no kernel on this device."""
    return bool(_NO_KERNEL.search(str(err)))


def failing_op(err):
    """The MindSpore op ``err`` names, or the MindSpore function the traceback ends in, or None."""
    found = _OP.search(str(err))
    if found:
        return found.group(1)
    frames = traceback.extract_tb(err.__traceback__)
    if frames and f"{os.sep}mindspore{os.sep}" in frames[-1].filename:
        return frames[-1].name
    return None


#: graph mode's trace of the source lines a failed compilation went through: "# 3 In file /path/x.py:46, 17~36"
_IN_FILE = re.compile(r"In file (\S+?\.py):(\d+)")


def _in_package(path):
    path = os.path.abspath(path)
    if path.startswith(PACKAGE + os.sep):
        return os.path.relpath(path, os.path.dirname(PACKAGE)).replace(os.sep, "/")
    return None


def project_frame(err):
    """The deepest place in this package the failure went through, as ``(path, line, function or None)``: from
    graph mode's source trace in the message (deeper than Python's frames, which end at the compilation), else
    from the traceback; None if neither reaches the package."""
    traced = [(_in_package(path), int(line), None) for path, line in _IN_FILE.findall(str(err))]
    traced = [t for t in traced if t[0]]
    if traced:
        return traced[-1]
    for frame in reversed(traceback.extract_tb(err.__traceback__)):
        rel = _in_package(frame.filename)
        if rel:
            return rel, frame.lineno, frame.name
    return None


def where(err, block_type):
    """``" in <what>"``: the op, and the kind's code or the optimizer's update it failed in ('' if unknown)."""
    parts = []
    op = failing_op(err)
    if op:
        parts.append(f"MindSpore's {op}")
    frame = project_frame(err)
    if frame:
        rel, line, name = frame
        if "/kinds/" in rel:
            owner = f"the {block_type} blocks' code"
        elif name in ("_update", "_apply") and rel.endswith("train_step.py"):
            owner = "the optimizer's update"
        elif rel.endswith("train_step.py"):
            owner = "the train step"
        else:
            owner = "the project's code"
        parts.append(f"{owner} ({rel}:{line}{', ' + name if name else ''})")
    return " in " + ", called from ".join(parts) if parts else ""


def step_failure(cfg, err):
    """The one line of a first train step that raised ``err``."""
    mode = "graph mode" if cfg.get("mode", 0) == 0 else "PyNative mode"
    what = (f"the train step of {cfg['model']} (block_type {cfg['block_type']}, amp_level {cfg['amp_level']}, "
            f"opt {cfg['opt']}, {mode})")
    if device_is_cause(err):
        return f"{what} does not compile or run on {cfg['device_target']}: {first_line(err)}"
    return f"{what} fails{where(err, cfg['block_type'])}: {first_line(err)}"

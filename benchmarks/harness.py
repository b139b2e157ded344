"""Run one measurement in a process of its own: a memory cap, a timeout, its time and its JSON result.

Every benchmark, sweep and family check runs its work through :func:`run`:
the child process is ``python <script> --worker <spec JSON> --result <file>``
(the script's ``main`` hands those to :func:`worker_main`), so a crash, a hang
or a memory blow-up of one measurement ends that measurement only, and the
peak memory a process reports is its own.

The child writes its result as one JSON object to the result file
(:func:`write_result`), which a worker may rewrite as it goes (the sweep does,
after each stage), so a killed worker still leaves what it had done.  The parent
watches the resident memory of the child's whole process group a few times a
second and kills the group past ``cap_mb`` or after ``timeout`` seconds.

This module imports neither MindSpore nor the package: the parent side stays light.
"""
import contextlib
import gc
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class Run:
    """What one worker process left: its result (``None`` if it wrote none), wall seconds, peak resident
    memory (MB; the larger of what the parent saw and what the worker reported), why it was stopped
    (``None``, or a sentence: over the memory cap, timeout, crashed with a signal or exit status) and
    the last meaningful line of its output."""
    result: Optional[dict]
    seconds: float
    peak_mb: float
    stopped: Optional[str] = None
    returncode: int = 0
    last_line: str = ""
    log_tail: str = ""
    spec: dict = field(default_factory=dict)

    @property
    def ok(self):
        return self.stopped is None and self.result is not None


# ---------------------------------------------------------------- the parent side

def group_rss(pgid):
    """Resident bytes of every process in process group ``pgid`` (the worker and anything it started)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid:  # field 5 (pgrp); rss is field 24
                total += int(fields[21]) * PAGE
        except (OSError, ValueError, IndexError):
            continue
    return total


def kill_group(proc):
    """Kill the worker ``proc`` and whatever it started (its own process group), and reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def last_log_line(path):
    """The last meaningful line a worker wrote (MindSpore's or Python's): rulers and blank lines skipped."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip() and not set(line.strip()) <= set("-=#* ")]
    except OSError:
        return "no output"
    return lines[-1][:300] if lines else "no output"


def _address_limit(cap_bytes):
    """A backstop if memory grows faster than it is watched: twice the cap in address space, plus 4 GB."""
    def apply():
        soft = 2 * cap_bytes + 4 * 2 ** 30
        resource.setrlimit(resource.RLIMIT_AS, (soft, soft))
    return apply


def _watch(proc, cap_bytes, timeout, start, poll):
    """Wait for ``proc``, killing its group past the cap or the timeout; ``(peak bytes, why stopped)``."""
    peak = 0
    unit, size = ("GB", 2 ** 30) if cap_bytes and cap_bytes >= 2 ** 30 else ("MB", 2 ** 20)
    while proc.poll() is None:
        rss = group_rss(proc.pid)
        peak = max(peak, rss)
        stopped = None
        if cap_bytes and rss > cap_bytes:
            stopped = (f"killed: resident memory {rss / size:.1f} {unit} over the {cap_bytes / size:g} {unit} cap")
        elif timeout and time.perf_counter() - start > timeout:
            stopped = f"killed: timeout after {timeout:g} s"
        if stopped:
            kill_group(proc)
            return peak, stopped
        time.sleep(poll)
    return peak, None


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM (``kill``, a job scheduler) stops the parent as Ctrl-C does: the worker, in a session of its own
    that the signal does not reach, is killed with it instead of running on alone.  (Main thread only.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run(script, spec, cap_mb=None, timeout=None, log_path=None, poll=0.25, env=None):
    """Run ``script --worker <spec> --result <file>`` in a process group of its own, under the memory
    cap (``cap_mb``, of the group's resident memory; ``None``: none) and ``timeout`` (seconds); return
    a :class:`Run`.  Its output goes to ``log_path`` (a temporary file by default)."""
    tmp = tempfile.mkdtemp(prefix="worker.")
    result_path = os.path.join(tmp, "result.json")
    log_path = log_path or os.path.join(tmp, "worker.log")
    cap = int(cap_mb * 2 ** 20) if cap_mb else None
    cmd = [sys.executable, os.path.abspath(script), "--worker", json.dumps(spec), "--result", result_path]
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    # the checkout's package first, whatever an installed or editable copy elsewhere says
    env["PYTHONPATH"] = os.pathsep.join([ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env.setdefault("GLOG_v", "3")
    start = time.perf_counter()
    try:
        with open(log_path, "w", encoding="utf-8") as log, _terminate_as_interrupt():
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=_address_limit(cap) if cap else None)
            try:
                peak, stopped = _watch(proc, cap, timeout, start, poll)
            except BaseException:
                kill_group(proc)
                raise
        seconds = time.perf_counter() - start
        result = read_result(result_path)
        last = last_log_line(log_path)
        tail = _tail(log_path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    code = proc.returncode
    if stopped is None and code != 0:
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        stopped = f"crashed ({how}): {last}"
    peak_mb = max(peak / 2 ** 20, (result or {}).get("peak_rss_mb") or 0)
    return Run(result, seconds, peak_mb, stopped, code, last, tail, dict(spec))


def _tail(path, chars=3000):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()[-chars:]
    except OSError:
        return ""


def read_result(path):
    """The JSON object a worker wrote to ``path``, or ``None``."""
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_timed_command(cmd, cwd=ROOT):
    """Wall seconds and peak RSS (MB) of one command, measured for that child alone; SystemExit if it fails."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def versions():
    """``mindspore 2.8.0, mindcv 0.3.0, 2 CPU cores``: what a measurement ran on."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pkg in ("mindspore", "mindcv"):
        try:
            out.append(f"{pkg} {version(pkg)}")
        except PackageNotFoundError:
            pass
    return ", ".join(out + [f"{os.cpu_count()} CPU cores"])


def mindcv_note(versions_line):
    """The sentence a table made with MindCV 0.3 carries about 0.5.0 (GitHub main, what MindCV's recipes
    and model pages are written for); empty for other versions."""
    if "mindcv 0.3." not in versions_line:
        return ""
    return (" Under MindCV 0.5.0 (GitHub main) the model names are the same; what differs for these rows "
            "(ShuffleNet-v1's grouped pointwise convs, PVT and VOLO, ViT) is in docs/compatibility.md, "
            "\"What changes under MindCV 0.5.0\".")


# ---------------------------------------------------------------- the worker side

def peak_rss_mb():
    """This process's peak resident memory so far, MB: the kernel's high-water mark of its own memory
    (``VmHWM``).  ``ru_maxrss`` is not used where /proc has it: Linux carries it over an exec from the
    process that forked the worker, so a worker started by a large process (a test runner with MindSpore
    loaded) would report that process's peak."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb():
    """This process's resident memory now, MB."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * PAGE / 2 ** 20


def write_result(path, result):
    """Write ``result`` (a JSON object) to ``path`` atomically, with this process's peak RSS (MB) and CPU
    time so far (seconds, every thread)."""
    result["peak_rss_mb"] = peak_rss_mb()
    result["process_cpu_s"] = round(time.process_time(), 1)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(result, f)
    os.replace(tmp, path)


def release():
    """Collect garbage and hand freed heap memory back to the system (glibc keeps it otherwise), so the
    peak of a later stage does not stack on an earlier one's."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def worker_main(workers, spec_json, result_path):
    """The child's side of :func:`run`: ``workers[spec["kind"]](spec, result_path)`` (a dict it returns is
    written as the result), then exit at once, skipping MindSpore's finalizers (the result is written)."""
    code = 0
    try:
        spec = json.loads(spec_json)
        result = workers[spec["kind"]](spec, result_path)
        if result is not None:
            write_result(result_path, result)
    except BaseException:  # noqa: BLE001  (the parent reports the last line of the trace)
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def worker_entry(workers, argv=None):
    """``main`` of a script that is only a worker: ``--worker <spec JSON> --result <file>``."""
    import argparse

    parser = argparse.ArgumentParser(description="a worker of harness.run")
    parser.add_argument("--worker", required=True)
    parser.add_argument("--result", required=True)
    args = parser.parse_args(argv)
    worker_main(workers, args.worker, args.result)


def quiet_mindspore(mode="graph"):
    """MindSpore on CPU with its log quiet, in graph (default) or PyNative mode; returns the module."""
    os.environ.setdefault("GLOG_v", "4")
    import mindspore as ms

    ms.set_context(mode=ms.GRAPH_MODE if mode == "graph" else ms.PYNATIVE_MODE)
    ms.set_device("CPU")
    return ms


def timed(fn, warmup, repeat):
    """Seconds of each of ``repeat`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def interleaved(calls, warmup, repeat):
    """Seconds per call for each named callable, timed round-robin in one process.

    Alternating the variants (in a rotating order) spreads any drift of the
    machine's speed over all of them alike, which separate runs would not.
    """
    names = list(calls)
    for name in names:
        timed(calls[name], warmup, 0)
    times = {name: [] for name in names}
    for r in range(repeat):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name] += timed(calls[name], 0, 1)
    return times

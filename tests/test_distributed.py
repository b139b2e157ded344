"""Data-parallel training under msrun on CPU: one node with two workers, and two nodes of one worker."""
import json
import os
import re
import socket
import subprocess
import sys

import pytest
from helpers import ROOT, small_run, user_env

pytestmark = [pytest.mark.msrun, pytest.mark.slow]  # every test launches training processes under msrun

MSRUN = os.path.join(os.path.dirname(sys.executable), "msrun")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def second_host_env(tmp_path):
    """The environment of a launch that must behave like a second machine.

    msrun starts a scheduler on every node whose own addresses (read with
    ``ip -j addr``) include ``--master_addr``.  Two "nodes" on one machine both
    own 127.0.0.1, so the second would start a second scheduler, fail to bind
    the port and exit non-zero although training succeeded.  Node 1 is given
    the view of a host that does not own 127.0.0.1, as a real second node has.
    """
    shim = tmp_path / "second_host_bin"
    shim.mkdir()
    (shim / "ip").write_text("#!/bin/sh\necho '[]'\n")
    (shim / "ip").chmod(0o755)
    env = user_env()
    env["PATH"] = str(shim) + os.pathsep + env["PATH"]
    return env


def launch(save, log_dir, digits, port, node_rank=None, env=None, extra=()):
    """One msrun launch of train.py (both workers when node_rank is None, else one of two nodes)."""
    if node_rank is None:
        topo = ["--worker_num", "2", "--local_worker_num", "2"]
    else:
        topo = ["--worker_num", "2", "--local_worker_num", "1", "--node_rank", str(node_rank),
                "--master_addr", "127.0.0.1"]
    cmd = [MSRUN, *topo, "--master_port", str(port), "--join", "True", "--log_dir", log_dir,
           "python", os.path.join(ROOT, "train.py"),
           *map(str, small_run(digits, save, "--distribute", "True", "--epoch_size", 2, "--val_interval", 2, *extra))]
    return subprocess.Popen(cmd, cwd=ROOT, env=env or user_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def check_run(save):
    logs = {r: open(os.path.join(save, f"train_rank{r}.log")).read() for r in (0, 1)}
    digests = {r: re.search(r"finished: 4 steps .* weights sha256 (\w+)", text) for r, text in logs.items()}
    assert all(digests.values()), logs
    assert digests[0].group(1) == digests[1].group(1), "ranks ended with different weights"
    for text in logs.values():
        # 160 training images sharded over 2 ranks: 80 each, 2 full batches of 32
        assert "epoch 1/2 step 2/2" in text and "2 device(s)" in text
        # each rank evaluates 30 of the 60 validation images; the totals are summed over ranks
        assert re.search(r"epoch 2/2 done: .* \(60 samples\)", text), text
    top1 = {r: re.search(r"val top1 ([\d.]+)", text).group(1) for r, text in logs.items()}
    assert top1[0] == top1[1]
    assert "last checkpoint:" in logs[0] and "last checkpoint:" not in logs[1]  # rank 0 saves, rank 1 does not
    summaries = open(os.path.join(save, "summary.jsonl")).read().splitlines()
    assert [json.loads(s)["epoch"] for s in summaries] == [1, 2]  # written once, by rank 0
    assert sorted(f for f in os.listdir(save) if f.endswith(".ckpt")) == [
        "src20_acb-best.ckpt", "src20_acb-e001.ckpt", "src20_acb-e002.ckpt"]


def finish(procs):
    outputs = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        outputs.append(out)
    return outputs


def test_msrun_one_node_two_workers_and_the_in_run_top1_is_the_saved_checkpoints(digits, tmp_path):
    """Two workers on one node; with --dist_bn reduce (BN statistics averaged over ranks before validating and
    saving) the accuracy the run reports is the one validate.py measures on the checkpoint it wrote."""
    from helpers import run_script

    save = str(tmp_path / "run")
    proc = launch(save, str(tmp_path / "msrun_logs"), digits, free_port(), extra=("--dist_bn", "reduce"))
    (out,) = finish([proc])
    assert proc.returncode == 0, out[-3000:]
    check_run(save)
    for rank in (0, 1):  # a worker ending normally tells its recorder so: no line, no record of a death
        assert our_lines(str(tmp_path / "msrun_logs"), f"worker_{rank}.log") == []
    assert not [name for name in os.listdir(save) if name.endswith(".died")]
    log = open(os.path.join(save, "train_rank0.log")).read()
    in_run = re.search(r"epoch 2/2 done: .* val top1 ([\d.]+) top5 [\d.]+ loss ([\d.]+) \(60 samples\)", log)
    assert in_run, log[-3000:]
    res = run_script("validate.py", "--ckpt_path", os.path.join(save, "src20_acb-e002.ckpt"), "--data_dir", digits,
                     "--num_parallel_workers", 1)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1].startswith(f"top1={in_run.group(1)} ")
    assert f"loss={in_run.group(2)} " in res.stdout


def test_msrun_two_nodes(digits, tmp_path):
    save, port = str(tmp_path / "run"), free_port()
    procs = [launch(save, str(tmp_path / "msrun_node0"), digits, port, node_rank=0),
             launch(save, str(tmp_path / "msrun_node1"), digits, port, node_rank=1, env=second_host_env(tmp_path))]
    outs = finish(procs)
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outs)
    check_run(save)


def job_processes(port):
    """Pids of the processes msrun started for the job on ``port`` that still run (from /proc)."""
    from acnet_ms.engine.msrun import running

    found = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().split(b"\0")
        except OSError:
            continue
        if f"MS_SCHED_PORT={port}".encode() in env and running(pid):
            found.append(pid)
    return found


def bounded_msrun(cmd, limit):
    """Run an msrun command in its own process group for at most ``limit`` seconds; the group is killed
    afterwards whatever happened.  Returns (exit status or None if it had to be killed, output, seconds)."""
    import signal
    import time

    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=limit)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        code, out = None, ""
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.communicate()
    return code, out, time.monotonic() - start


def kill_job(port):
    import signal

    for pid in job_processes(port):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def our_lines(log_dir, name):
    text = open(os.path.join(log_dir, name)).read()
    return [line for line in text.splitlines() if line.startswith("error: ")]


def test_msrun_on_a_busy_port_ends_every_process_with_one_line(digits, tmp_path):
    """Another program listens on --master_port: the scheduler says so, each worker says why it stops, msrun
    exits non-zero within a minute or two, and no process of the job is left."""
    port, logs, save = free_port(), str(tmp_path / "logs"), str(tmp_path / "run")
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", port))
    holder.listen(8)
    cmd = [MSRUN, "--worker_num", "2", "--local_worker_num", "2", "--master_port", str(port), "--join", "True",
           "--log_dir", logs, "python", os.path.join(ROOT, "train.py"),
           *map(str, small_run(digits, save, "--distribute", "True", "--epoch_size", 1))]
    try:
        code, out, seconds = bounded_msrun(cmd, 240)
        left = job_processes(port)
    finally:
        holder.close()
        kill_job(port)
    assert code not in (0, None), (code, out[-2000:])
    assert not left, f"processes of the job still running: {left}"
    (line,) = our_lines(logs, "scheduler.log")
    assert f"port {port}" in line and "in use by another program" in line and "no launcher" not in line
    # the first worker to end has msrun kill the other (SIGKILL), which may leave that one no time for a line
    said = {rank: our_lines(logs, f"worker_{rank}.log") for rank in (0, 1)}
    assert any(said.values()), said
    for rank, lines in said.items():
        # the scheduler gone when the worker looked (it names the port's holder) or after (it names the scheduler)
        assert len(lines) <= 1 and all(line.startswith(f"error: rank {rank} (msrun --master_port {port}): ")
                                       and ("msrun's scheduler (pid" in line and "exited before the cluster formed"
                                            in line or f"port {port} on 127.0.0.1 is held by another program (pid "
                                            f"{os.getpid()})" in line) for line in lines), lines
    assert not os.path.exists(save)  # nothing written


def test_msrun_a_worker_that_dies_ends_the_job(digits, tmp_path):
    """One worker killed mid-run, after its first checkpoint: msrun stops the other, msrun exits non-zero in
    bounded time, no process of the job is left; the dead rank's log and the scheduler's end with one line
    naming that rank (not the survivor) and the checkpoint to resume from, the survivor's log with none."""
    import signal
    import time

    port, logs, save = free_port(), str(tmp_path / "logs"), str(tmp_path / "run")
    cmd = [MSRUN, "--worker_num", "2", "--local_worker_num", "2", "--master_port", str(port), "--join", "True",
           "--log_dir", logs, "python", os.path.join(ROOT, "train.py"),
           *map(str, small_run(digits, save, "--distribute", "True", "--epoch_size", 200))]
    # MindSpore's cluster declares a silent node dead after MS_NODE_TIMEOUT seconds: 10 here, not its default
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(user_env(), MS_NODE_TIMEOUT="10"), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        rank1_log, deadline = os.path.join(save, "train_rank1.log"), time.monotonic() + 400
        while time.monotonic() < deadline and proc.poll() is None:
            if os.path.isfile(rank1_log) and "epoch 2/200 step 2/" in open(rank1_log).read():
                break
            time.sleep(1)
        victims = [pid for pid in job_processes(port)
                   if b"RANK_ID=1" in open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
                   and b"MS_ROLE=MS_WORKER" in open(f"/proc/{pid}/environ", "rb").read().split(b"\0")]
        assert victims, "rank 1 did not start training"
        os.kill(victims[0], signal.SIGKILL)
        try:
            out, _ = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            out = None
        left = job_processes(port)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        proc.communicate()
        kill_job(port)
    assert out is not None, "msrun did not end within 300 s of a worker's death"
    assert proc.returncode != 0
    assert not left, f"processes of the job still running: {left}"
    import glob

    saved = sorted(glob.glob(os.path.join(save, "src20_acb-e[0-9]*.ckpt")))
    assert saved, "no epoch checkpoint was written before the kill"
    last = saved[-1]  # the newest epoch (the kill comes in epoch 2 or later, some steps after rank 1 logged it)
    said = (f"error: rank 1 (msrun --master_port {port}) died mid-run (killed, or out of memory); msrun then "
            f"stopped the other workers; resume with --resume {last}")
    assert our_lines(logs, "worker_1.log") == [said]
    assert our_lines(logs, "worker_0.log") == []  # the survivor, stopped by msrun, is not blamed
    lines = our_lines(logs, "scheduler.log")
    assert lines == [said], lines
    assert not any("[INFO]" in line for name in ("worker_0.log", "worker_1.log", "scheduler.log")
                   for line in open(os.path.join(logs, name)).read().splitlines()), "MindSpore's INFO lines"

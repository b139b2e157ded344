"""Data-parallel training under msrun on CPU: one node with two workers, and two nodes of one worker."""
import json
import os
import re
import socket
import subprocess
import sys

import pytest
from conftest import ROOT, small_run, user_env

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


def launch(save, log_dir, digits, port, node_rank=None, env=None):
    """One msrun launch of train.py (both workers when node_rank is None, else one of two nodes)."""
    if node_rank is None:
        topo = ["--worker_num", "2", "--local_worker_num", "2"]
    else:
        topo = ["--worker_num", "2", "--local_worker_num", "1", "--node_rank", str(node_rank),
                "--master_addr", "127.0.0.1"]
    cmd = [MSRUN, *topo, "--master_port", str(port), "--join", "True", "--log_dir", log_dir,
           "python", os.path.join(ROOT, "train.py"),
           *map(str, small_run(digits, save, "--distribute", "True", "--epoch_size", 2, "--val_interval", 2))]
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


def test_msrun_one_node_two_workers(digits, tmp_path):
    save = str(tmp_path / "run")
    proc = launch(save, str(tmp_path / "msrun_logs"), digits, free_port())
    (out,) = finish([proc])
    assert proc.returncode == 0, out[-3000:]
    check_run(save)


def test_msrun_two_nodes(digits, tmp_path):
    save, port = str(tmp_path / "run"), free_port()
    procs = [launch(save, str(tmp_path / "msrun_node0"), digits, port, node_rank=0),
             launch(save, str(tmp_path / "msrun_node1"), digits, port, node_rank=1, env=second_host_env(tmp_path))]
    outs = finish(procs)
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outs)
    check_run(save)


def test_msrun_in_run_top1_is_the_saved_checkpoints(digits, tmp_path):
    """dist_bn reduce: BN statistics are averaged over ranks before validating and saving, so the accuracy
    a run reports is the one validate.py measures on the checkpoint it wrote."""
    from conftest import run_script

    save = str(tmp_path / "run")
    cmd = [MSRUN, "--worker_num", "2", "--local_worker_num", "2", "--master_port", str(free_port()), "--join",
           "True", "--log_dir", str(tmp_path / "logs"), "python", os.path.join(ROOT, "train.py"),
           *map(str, small_run(digits, save, "--distribute", "True", "--epoch_size", 1, "--dist_bn", "reduce"))]
    (out,) = finish([subprocess.Popen(cmd, cwd=ROOT, env=user_env(), stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)])
    log = open(os.path.join(save, "train_rank0.log")).read()
    in_run = re.search(r"epoch 1/1 done: .* val top1 ([\d.]+) top5 [\d.]+ loss ([\d.]+) \(60 samples\)", log)
    assert in_run, out[-3000:]
    res = run_script("validate.py", "--ckpt_path", os.path.join(save, "src20_acb-e001.ckpt"), "--data_dir", digits,
                     "--num_parallel_workers", 1)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1].startswith(f"top1={in_run.group(1)} ")
    assert f"loss={in_run.group(2)} " in res.stdout

"""Every entry point's --help works on its own: usage and options on stdout, exit 0, nothing else needed."""
import os
import sys

import pytest
from helpers import ROOT, assert_clean_exit, run_script, stderr_of

HELP = {
    ("train.py",): ["--config", "--model", "--block_type", "--data_dir", "--ckpt_save_dir", "--image_resize"],
    ("validate.py",): ["--ckpt_path", "--data_dir", "--deploy", "--json", "--model", "--val_list"],
    ("convert.py",): ["--ckpt_path", "--output", "--overwrite", "--fold_bn", "--export", "--input_shape", "--int8",
                      "--calib_data", "--calib_samples", "--calib_method"],
    ("analyze.py",): ["magnitude", "sparsity", "robustness", "quantization", "--ckpt_path", "--labels", "--out",
                      "--ratios", "--seeds", "--groups", "--calib_data", "validate.py"],
    ("analyze.py", "quantization"): ["--ckpt_path", "--labels", "--out", "--calib_data", "--calib_samples",
                                     "--calib_method", "validate.py"],
    ("analyze.py", "sparsity"): ["--ckpt_path", "--labels", "--out", "--ratios", "--seeds", "--groups",
                                 "validate.py"],
}


@pytest.mark.parametrize("flag", ["--help", "-h"])
@pytest.mark.parametrize("command", list(HELP), ids=" ".join)
def test_help_alone_prints_usage_and_options(command, flag):
    res = run_script(*command, flag, timeout=120)
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    assert_clean_exit(res)
    assert "error" not in res.stderr, res.stderr
    assert res.stdout.startswith(f"usage: {' '.join(command)} "), res.stdout[:300]
    for option in HELP[command]:
        assert option in res.stdout, (option, res.stdout[:3000])


def test_a_sub_command_help_lists_only_its_options():
    res = run_script("analyze.py", "magnitude", "--help", timeout=120)
    assert res.returncode == 0 and res.stdout.startswith("usage: analyze.py magnitude ")
    assert "--ckpt_path" in res.stdout and "--out" in res.stdout
    assert "--ratios" not in res.stdout  # sparsity's
    assert "--calib_data" not in res.stdout  # quantization's


def test_validate_without_a_checkpoint_is_still_an_error():
    res = run_script("validate.py", "--data_dir", ".", timeout=120)
    assert res.returncode == 2 and stderr_of(res).strip() == "error: --ckpt_path is required", res.stderr


def test_msrun_environment_and_port_check():
    """msrun's variables name the role, rank and port; a port another program listens on is refused by the
    scheduler in one line naming it; outside msrun nothing is detected."""
    import socket

    from acnet_ms.cli import UserError
    from acnet_ms.engine.msrun import check_port_free, msrun_env

    assert msrun_env({}) is None
    worker = msrun_env({"MS_ROLE": "MS_WORKER", "MS_SCHED_PORT": "8118", "RANK_ID": "1", "MS_TOPO_TIMEOUT": "30"})
    assert (worker.role, worker.rank, worker.port, worker.timeout) == ("MS_WORKER", "1", 8118, 30)
    assert worker.who == "rank 1 (msrun --master_port 8118)"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        sched = msrun_env({"MS_ROLE": "MS_SCHED", "MS_SCHED_PORT": str(port), "MS_SCHED_HOST": "127.0.0.1"})
        with pytest.raises(UserError, match=f"port {port} on 127.0.0.1 is in use"):
            check_port_free(sched)
    check_port_free(sched)  # free again


def watchdog_line(who, port, timeout, scheduler):
    """Run the watchdog process on a sleeping stand-in worker; it must kill it (SIGKILL): its stderr line."""
    import subprocess

    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    code = (f"import sys; sys.path.insert(0, {ROOT!r}); from acnet_ms.engine.msrun import watch; "
            f"watch({worker.pid}, {who!r}, {port}, '127.0.0.1', {timeout}, {scheduler}, 0.1)")
    try:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert worker.wait(timeout=10) == -9
    finally:
        worker.kill()
    return res.stderr.strip()


def test_msrun_watchdog_ends_a_waiting_worker_with_one_line():
    """The watchdog process kills the worker it watches once the scheduler beside it has exited."""
    import subprocess

    scheduler = subprocess.Popen([sys.executable, "-c", "pass"])
    scheduler.wait()
    assert watchdog_line("rank 1 (msrun --master_port 9)", 9, 30, scheduler.pid) == ("error: rank 1 (msrun --master_port 9): msrun's scheduler (pid "
                                  f"{scheduler.pid}) exited before the cluster formed; its line is in scheduler.log "
                                  "under msrun's --log_dir")


def test_msrun_watchdog_ends_a_worker_whose_port_another_program_holds():
    """A scheduler that failed and was gone before the watchdog looked for it: the watchdog finds the program
    holding the port (not msrun's scheduler) and ends the worker with one line, long before its timeout."""
    import socket

    from acnet_ms.engine.msrun import port_holders

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen(1)
        port = holder.getsockname()[1]
        assert port_holders(port) == {os.getpid(): False}
        line = watchdog_line(f"rank 0 (msrun --master_port {port})", port, 600, 0)
    assert line == (f"error: rank 0 (msrun --master_port {port}): port {port} on 127.0.0.1 is held "
                                  f"by another program (pid {os.getpid()}), not msrun's scheduler: the cluster "
                                  "cannot form; choose a free --master_port (the scheduler's line is in "
                                  "scheduler.log under msrun's --log_dir)")
    assert port_holders(port) == {}


def recorded_worker(folder, port, end):
    """A stand-in msrun worker (rank 1) that starts its death recorder and then ends by ``end`` (Python code);
    returns (its exit status, what it and its recorder wrote on stderr)."""
    import subprocess

    code = (f"import os, signal, sys; sys.path.insert(0, {ROOT!r}); from acnet_ms.engine.msrun import Msrun, "
            f"DeathRecorder; DeathRecorder(Msrun('MS_WORKER', '1', '127.0.0.1', {port}, 600), {folder!r}).start(1);"
            f" {end}")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return res.returncode, res.stderr


@pytest.mark.parametrize("saved", [("src20_acb-e001.ckpt", "src20_acb-e010.ckpt", "src20_acb-best.ckpt"), ()])
def test_a_worker_that_dies_mid_run_is_named_with_its_resume_point_by_its_recorder(tmp_path, saved):
    """A killed worker's recorder says which rank died and the newest epoch checkpoint to resume from, in the
    worker's log and in a record the scheduler reads; a worker that ends normally (even with an error) says
    nothing through it."""
    import time

    from acnet_ms.engine.msrun import recorded_deaths, remove_death_records

    for name in saved:
        (tmp_path / name).write_bytes(b"")
    since = time.time() - 1
    code, err = recorded_worker(str(tmp_path), 9, "print('trained')")
    assert code == 0 and err == "" and recorded_deaths(str(tmp_path), since) == []
    code, err = recorded_worker(str(tmp_path), 9, "sys.exit('error: a bad option')")
    assert code == 1 and err.strip() == "error: a bad option" and recorded_deaths(str(tmp_path), since) == []
    code, err = recorded_worker(str(tmp_path), 9, "os.kill(os.getpid(), signal.SIGKILL)")
    where = (f"resume with --resume {tmp_path / 'src20_acb-e010.ckpt'}" if saved else
             "no checkpoint was written yet: start the run again with another --ckpt_save_dir")
    line = ("rank 1 (msrun --master_port 9) died mid-run (killed, or out of memory); msrun then stopped the other "
            f"workers; {where}")
    assert code == -9 and err == f"error: {line}\n"  # the recorder's stderr is the worker's log
    assert recorded_deaths(str(tmp_path), since) == [line]
    assert recorded_deaths(str(tmp_path), time.time() + 60) == []  # an earlier launch's record is not this one's
    remove_death_records(str(tmp_path), before=since)  # a launch that started before the death keeps its record
    assert recorded_deaths(str(tmp_path), since) == [line]
    remove_death_records(str(tmp_path), before=time.time() + 60)
    assert sorted(os.listdir(tmp_path)) == sorted(saved)


def test_cpu_threads_from_the_environment_must_be_a_positive_count(monkeypatch):
    from acnet_ms.cli import UserError
    from acnet_ms.engine.runtime import CPU_THREADS, set_cpu_threads

    for bad in ("0", "many", "-2"):
        monkeypatch.setenv(CPU_THREADS, bad)
        with pytest.raises(UserError, match=rf"^{CPU_THREADS}='{bad}': a positive number of threads"):
            set_cpu_threads()
    monkeypatch.setenv(CPU_THREADS, "2")
    set_cpu_threads()  # MindSpore took its count once (conftest's): a second one is no error

"""Processes msrun starts: who they are (its environment variables), and a bounded wait for its cluster.

MindSpore's ``communication.init()`` blocks in C++ holding Python's lock until
msrun's cluster forms: no Python thread or signal handler runs meanwhile.  A
busy ``--master_port`` made the scheduler fail while the workers waited,
connected to whatever program held the port, for good.  So the scheduler
checks its port first, and each worker waits under a watchdog *process*
(:class:`InitWatchdog`) that ends it with one line when the scheduler beside
it has exited, another program listens on the scheduler's port (a scheduler
that failed before the watchdog looked for it), or the cluster has not formed
in time.  No MindSpore import here.

A worker that dies mid-run (killed, out of memory) leaves no line of its
own, and msrun's scheduler blames whichever rank it looks at first.  So each
worker runs beside a small recorder process (:class:`DeathRecorder`) in its
process group: msrun ends the other workers by killing their whole groups,
recorders included, so only the recorder of the worker that died first
outlives it, and says which rank that was and which checkpoint to resume from.
"""
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from ..cli import UserError


@dataclass(frozen=True)
class Msrun:
    """What msrun tells a process it started: its role, rank, and the scheduler's address."""
    role: str      # MS_SCHED (the scheduler) or MS_WORKER
    rank: str      # RANK_ID ("?" when msrun leaves it to the cluster)
    host: str
    port: int
    timeout: int   # msrun --cluster_time_out, seconds (MS_TOPO_TIMEOUT); negative: no limit

    @property
    def who(self):
        return (f"msrun's scheduler (--master_port {self.port})" if self.role == "MS_SCHED" else
                f"rank {self.rank} (msrun --master_port {self.port})")


def msrun_env(environ=None):
    """The :class:`Msrun` of this process if msrun started it (``MS_ROLE`` / ``MS_SCHED_PORT``), else None."""
    env = os.environ if environ is None else environ
    if not env.get("MS_ROLE") and not env.get("MS_SCHED_PORT"):
        return None
    try:
        port = int(env.get("MS_SCHED_PORT", "0"))
        timeout = int(env.get("MS_TOPO_TIMEOUT", "600"))
    except ValueError:
        port, timeout = 0, 600
    return Msrun(env.get("MS_ROLE", "MS_WORKER"), env.get("RANK_ID", "?"), env.get("MS_SCHED_HOST", "127.0.0.1"),
                 port, timeout)


def check_port_free(msrun):
    """The scheduler's port must be free to listen on: UserError naming it otherwise."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((msrun.host, msrun.port))
        except OSError as err:
            raise UserError(f"{msrun.who}: port {msrun.port} on {msrun.host} is in use by another program "
                            f"({err.strerror}); choose a free --master_port (the workers stop as well)") from None


def _stat(pid):
    """(state, parent pid) of a process from /proc (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return fields[0].decode(), int(fields[1])
    except (OSError, ValueError, IndexError):
        return None


def _is_scheduler(pid, port):
    """Whether process ``pid`` is msrun's scheduler for ``port`` (its MS_ROLE and MS_SCHED_PORT; False when its
    environment cannot be read)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(e.split(b"=", 1) for e in f.read().split(b"\0") if b"=" in e)
    except OSError:
        return False
    return env.get(b"MS_ROLE") == b"MS_SCHED" and env.get(b"MS_SCHED_PORT", b"").decode() == str(port)


def scheduler_beside(port, parent=None):
    """The pid of the msrun scheduler started beside this process (a child of the same msrun with
    MS_ROLE=MS_SCHED and the same port), or None (another node's, or no /proc)."""
    parent = os.getppid() if parent is None else parent
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        stat = _stat(pid)
        if pid == os.getpid() or not stat or stat[1] != parent:
            continue
        if _is_scheduler(pid, port):
            return pid
    return None


def running(pid):
    """Whether ``pid`` runs (a zombie, exited but not yet collected by msrun, does not)."""
    stat = _stat(pid)
    if stat is None:
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False
    return stat[0] not in ("Z", "X")


def _listening_sockets(port):
    """The inodes of the TCP sockets listening on ``port`` on this machine (any address), from /proc/net."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = [line.split() for line in f.read().splitlines()[1:]]
        except OSError:
            continue
        for row in rows:  # sl local_address rem_address st ... inode; st 0A is LISTEN
            if len(row) > 9 and row[3] == "0A" and int(row[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(row[9])
    return inodes


def _fd_links(pid):
    """What the open file descriptors of ``pid`` point to (those still open and readable)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return set()
    links = set()
    for fd in fds:
        try:
            links.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:  # closed meanwhile
            pass
    return links


def port_holders(port):
    """{pid: is msrun's scheduler for ``port``} of the processes listening on ``port`` here (those whose
    sockets this user may read; {} when none or no /proc)."""
    sockets = {f"socket:[{inode}]" for inode in _listening_sockets(port)}
    holders = {}
    if not sockets:
        return holders
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        if _fd_links(pid) & sockets:
            holders[pid] = _is_scheduler(pid, port)
    return holders


def is_local(host):
    """Whether ``host`` is an address of this machine (a socket can be bound to it)."""
    import socket

    try:
        with socket.socket() as probe:
            probe.bind((host, 0))
        return True
    except OSError:
        return False


def _held_by_another(port, local):
    """The pid of a program other than msrun's scheduler listening on ``port`` of this machine, or None."""
    if not local:
        return None
    strangers = [pid for pid, scheduler in port_holders(port).items() if not scheduler]
    return strangers[0] if strangers else None


def watch(worker, who, port, host, timeout, scheduler, poll=1.0):
    """The watchdog process's loop: end ``worker`` with one line on stderr when the scheduler ``scheduler``
    (a pid, or 0) has exited, another program listens on the scheduler's port of this machine (the
    scheduler may have exited before this watchdog looked for it), or ``timeout`` seconds have passed;
    return when ``worker`` is gone."""
    deadline = time.monotonic() + timeout if timeout >= 0 else float("inf")
    local = is_local(host)
    while running(worker):
        stranger = None if scheduler else _held_by_another(port, local)
        if scheduler and not running(scheduler):
            why = (f"msrun's scheduler (pid {scheduler}) exited before the cluster formed; its line is in "
                   f"scheduler.log under msrun's --log_dir")
        elif stranger:
            why = (f"port {port} on {host} is held by another program (pid {stranger}), not msrun's scheduler: "
                   f"the cluster cannot form; choose a free --master_port (the scheduler's line is in "
                   f"scheduler.log under msrun's --log_dir)")
        elif time.monotonic() > deadline:
            why = (f"the cluster did not form within {timeout} s (msrun --cluster_time_out plus a minute): is "
                   f"port {port} on {host} held by another program, or did a process of the job not start?")
        else:
            time.sleep(poll)
            continue
        print(f"error: {who}: {why}", file=sys.stderr, flush=True)
        try:
            os.kill(worker, signal.SIGKILL)
        except OSError:
            pass
        return


def _helper_command(name, call):
    """The command line of a helper process that runs ``call`` of this module's function ``name`` (this
    package first on its path, whatever the worker's working folder)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {root!r}); "
                                  f"from acnet_ms.engine.msrun import {name}; {call}"]


class InitWatchdog:
    """A bounded wait for msrun's cluster around ``mindspore.communication.init()`` in a worker.

    While it waits, SIGINT/SIGTERM end the process at once (Python's handlers
    cannot run then), and a watchdog process ends it with one line (see
    :func:`watch`).  Outside msrun, and in the scheduler, it does nothing.
    """

    def __init__(self, msrun):
        self.msrun = msrun if msrun and msrun.role != "MS_SCHED" else None
        self.previous, self.process = {}, None

    def __enter__(self):
        import threading

        m = self.msrun
        if m is None:
            return self
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, signal.SIG_DFL)
        limit = m.timeout + 60 if m.timeout >= 0 else -1
        call = f"watch({os.getpid()}, {m.who!r}, {m.port}, {m.host!r}, {limit}, {scheduler_beside(m.port) or 0})"
        self.process = subprocess.Popen(_helper_command("watch", call), stdin=subprocess.DEVNULL)
        return self

    def __exit__(self, *exc):
        if self.process is not None:
            self.process.kill()
            self.process.wait()
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False


#: what a worker's recorder leaves in the run folder for the scheduler's line: ``.rank<r>.died``
_DIED_FILE = re.compile(r"\.rank(\d+)\.died$")
_EPOCH_FILE = re.compile(r".+-e(\d+)\.ckpt$")


def last_epoch_checkpoint(folder):
    """The run's newest epoch checkpoint (``<prefix>-e<N>.ckpt``) in ``folder``, or None."""
    try:
        names = os.listdir(folder)
    except OSError:
        return None
    epochs = [(int(m.group(1)), name) for name, m in ((n, _EPOCH_FILE.match(n)) for n in names) if m]
    return os.path.join(folder, max(epochs)[1]) if epochs else None


def died_line(rank, port, folder):
    """The line said when worker ``rank`` of the job at ``port`` died mid-run: who, and where to go on."""
    last = last_epoch_checkpoint(folder) if folder else None
    where = (f"resume with --resume {last}" if last else
             "no checkpoint was written yet: start the run again with another --ckpt_save_dir")
    return (f"rank {rank} (msrun --master_port {port}) died mid-run (killed, or out of memory); msrun then "
            f"stopped the other workers; {where}")


def record(worker, rank, port, folder, poll=0.5):
    """The recorder process's loop: return quietly when ``worker`` says ``done`` on stdin; when it is gone
    without saying so, print its :func:`died_line` on stderr (its log) and leave it in ``folder``."""
    import select

    while True:
        ready, _, _ = select.select([sys.stdin], [], [], poll)
        if ready:
            if sys.stdin.readline().strip() == "done":
                return
            break  # end of file: the worker is gone
        if not running(worker):
            break
    line = died_line(rank, port, folder)
    print(f"error: {line}", file=sys.stderr, flush=True)
    if folder and os.path.isdir(folder):
        path = os.path.join(folder, f".rank{rank}.died")
        with open(path + ".tmp", "w") as f:
            f.write(line + "\n")
        os.replace(path + ".tmp", path)


def _death_records(folder):
    """(written at, path) of each record a recorder left in ``folder`` ([] when there is no such folder)."""
    try:
        names = [name for name in os.listdir(folder) if _DIED_FILE.match(name)]
    except OSError:
        return []
    found = []
    for name in names:
        path = os.path.join(folder, name)
        try:
            found.append((os.path.getmtime(path), path))
        except OSError:  # removed meanwhile
            pass
    return found


def recorded_deaths(folder, since):
    """The lines recorders left in ``folder`` at or after ``since`` (a time.time()), oldest first."""
    lines = []
    for _, path in sorted(r for r in _death_records(folder) if r[0] >= since):
        try:
            with open(path) as f:
                lines.append(f.read().strip())
        except OSError:
            pass
    return lines


def remove_death_records(folder, before):
    """Remove the records an earlier, failed launch left in ``folder``: those written before ``before`` (a
    time.time() taken before this launch's cluster formed, so none of this launch's)."""
    for written, path in _death_records(folder):
        if written < before:
            try:
                os.remove(path)
            except OSError:
                pass


class DeathRecorder:
    """The recorder process of an msrun worker (see :func:`record`); nothing outside msrun or in the scheduler.

    :meth:`start` once the cluster formed; the worker's normal exit (``atexit``)
    tells the recorder it is done.
    """

    def __init__(self, msrun, folder):
        self.msrun = msrun if msrun and msrun.role != "MS_SCHED" else None
        self.folder, self.process = folder, None

    def start(self, rank):
        import atexit

        if self.msrun is None:
            return self
        call = f"record({os.getpid()}, {rank}, {self.msrun.port}, {self.folder!r})"
        # the same process group as the worker: msrun's kill of a live worker's group ends its recorder too
        self.process = subprocess.Popen(_helper_command("record", call), stdin=subprocess.PIPE, text=True)
        atexit.register(self.done)
        return self

    def done(self):
        if self.process is None:
            return
        try:
            self.process.stdin.write("done\n")
            self.process.stdin.close()
            self.process.wait(timeout=10)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.process.kill()
        self.process = None

"""Peak memory of a whole process tree, sampled from /proc (no psutil needed).

A process belongs to the tree if it descends from the root or shares its session
(each run starts in a new session, which also catches daemons such as Ray's raylet).
RSS counts shared pages once per process (forked workers sharing a dataset are counted
several times); PSS splits shared pages between their users, so the PSS sum is the
memory the tree really occupies. Both are reported.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


def _stat(pid: int) -> tuple[int, int] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[3])  # ppid, session id


def _kib(path: str, key: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_pids(root: int) -> list[int]:
    info = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (s := _stat(int(entry))):
            info[int(entry)] = s
    members = {root}
    changed = True
    while changed:
        changed = False
        for pid, (ppid, sid) in info.items():
            if pid not in members and (ppid in members or sid == root):
                members.add(pid)
                changed = True
    return sorted(p for p in members if p in info)


@dataclass
class Peak:
    rss_mib: float = 0.0
    pss_mib: float = 0.0
    processes: int = 0
    samples: list[tuple[float, float, float]] = field(default_factory=list)


def run_measured(cmd: list[str], env: dict[str, str], log: Path, interval: float = 0.25) -> tuple[int, float, Peak]:
    """Run ``cmd`` in a new session; return (exit code, wall seconds, peak memory of its tree)."""
    peak = Peak()
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                pids = tree_pids(proc.pid)
                rss = sum(_kib(f"/proc/{p}/status", "VmRSS:") for p in pids) / 1024
                pss = sum(_kib(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids) / 1024
                peak.samples.append((time.perf_counter() - started, rss, pss))
                peak.rss_mib, peak.pss_mib = max(peak.rss_mib, rss), max(peak.pss_mib, pss)
                peak.processes = max(peak.processes, len(pids))
                done.wait(interval)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        code = proc.wait()
        wall = time.perf_counter() - started
        done.set()
        thread.join()
    _reap_session(proc.pid)
    return code, wall, peak


def _reap_session(sid: int) -> None:
    """Kill anything the run left behind in its session (Ray daemons, stray workers)."""
    for pid in tree_pids(sid):
        if pid != sid:
            with contextlib.suppress(OSError):  # already gone
                os.kill(pid, 9)

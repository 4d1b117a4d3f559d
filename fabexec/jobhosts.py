"""The hosts of the scheduler job this process runs in: Slurm, PBS or Flux.

A scheduler owns the nodes of an HPC cluster and tells a job which it got;
`Hostfile.from_env` asks, in this order:

- **Slurm**: ``SLURM_JOB_NODELIST`` (or the older ``SLURM_NODELIST``), a
  compressed list such as ``n[1-3,7],gpu[01-02]``, expanded by our own parser
  (`fabexec.hostfile.expand`), not by ``scontrol show hostnames``, so it works
  where the Slurm commands are not installed. ``SLURM_TASKS_PER_NODE``
  (``2(x3),1``) gives each node's slots when present.
- **PBS / Torque**: ``$PBS_NODEFILE``, one line per slot: a node listed N
  times is one host with N slots, in the order of first appearance.
- **Flux**: ``FLUX_URI`` set means a Flux instance; ``flux hostlist`` prints
  its hosts in the same compressed form. Flux is not installable on this
  project's test machine, so this path is tested only against a fake
  ``flux`` on PATH, never a real Flux.

Outside any job it raises `NotInJobError`, which names what it looked for.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import List, Mapping, Optional, Tuple

from .errors import HostfileError, NotInJobError
from .hostfile import expand

__all__ = ["job_hosts"]

_TASKS = re.compile(r"(\d+)(?:\(x(\d+)\))?")

Hosts = Tuple[List[str], List[Optional[int]]]


def job_hosts(environ: Optional[Mapping[str, str]] = None) -> Hosts:
    """The current job's hosts and their slot counts (None where unknown)."""
    env = os.environ if environ is None else environ
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if nodelist:
        return _slurm(nodelist, env.get("SLURM_TASKS_PER_NODE"))
    if env.get("PBS_NODEFILE"):
        return _pbs(env["PBS_NODEFILE"])
    if env.get("FLUX_URI"):
        return _flux(env)
    raise NotInJobError("not inside a scheduler job: none of SLURM_JOB_NODELIST, "
                        "PBS_NODEFILE or FLUX_URI is set (run under salloc/sbatch/srun, "
                        "qsub or flux, or give the hosts yourself)")


def _slurm(nodelist: str, tasks: Optional[str]) -> Hosts:
    try:
        hosts = expand(nodelist)
    except HostfileError as err:
        raise HostfileError(f"SLURM_JOB_NODELIST cannot be parsed: {err}",
                            text=nodelist) from None
    return hosts, _slurm_slots(tasks, len(hosts))


def _slurm_slots(tasks: Optional[str], count: int) -> List[Optional[int]]:
    """``SLURM_TASKS_PER_NODE`` (``2(x3),1``) as one count per node."""
    if not tasks:
        return [None] * count
    slots: List[Optional[int]] = []
    for item in tasks.split(","):
        match = _TASKS.fullmatch(item.strip())
        if match is None:
            raise HostfileError("SLURM_TASKS_PER_NODE cannot be parsed (expected e.g. "
                                "'2(x3),1')", text=tasks)
        slots.extend([int(match[1])] * int(match[2] or 1))
    if len(slots) != count:
        raise HostfileError(f"SLURM_TASKS_PER_NODE gives {len(slots)} nodes, "
                            f"SLURM_JOB_NODELIST {count}", text=tasks)
    return slots


def _pbs(path: str) -> Hosts:
    try:
        with open(path, encoding="utf-8") as stream:
            lines = [line.strip() for line in stream]
    except OSError as err:
        raise HostfileError(f"PBS_NODEFILE cannot be read: {err.strerror or err}",
                            path=path) from None
    counts = {}
    for line in lines:
        if line and not line.startswith("#"):
            counts[line] = counts.get(line, 0) + 1
    if not counts:
        raise HostfileError("PBS_NODEFILE lists no node", path=path)
    return list(counts), list(counts.values())


def _flux(env: Mapping[str, str]) -> Hosts:
    flux = shutil.which("flux", path=env.get("PATH"))
    if flux is None:
        raise HostfileError("FLUX_URI is set but no `flux` command is on PATH")
    proc = subprocess.run([flux, "hostlist"], capture_output=True, text=True,
                          env=dict(env), timeout=60)
    if proc.returncode != 0:
        raise HostfileError(f"`flux hostlist` failed ({proc.returncode}): "
                            f"{proc.stderr.strip()}")
    text = proc.stdout.strip()
    try:
        hosts = expand(text)
    except HostfileError as err:
        raise HostfileError(f"`flux hostlist` printed what we cannot parse: {err}",
                            text=text) from None
    return hosts, [None] * len(hosts)

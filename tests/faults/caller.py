"""A program that runs one `Exec` until a test interrupts it (see test_interrupts.py).

``python -m tests.faults.caller KIND COMMAND OUTPUT SSH_CONFIG HOSTFILE``: KIND is
``local``, ``mpi``, ``ssh`` (the hostfile's first host) or ``pssh`` (all of them),
with ``-async`` appended for an async `Exec` (the program then waits, as a caller that
went on with other work, holding the `Exec`), ``-async-dropped`` for one whose
`Exec` the caller does not keep, and ``-thread`` for an `Exec` the caller runs in a
worker thread while its main thread waits for that thread. Output goes to the file OUTPUT only.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, Dict

from fabexec import (
    Exec,
    ExecInfo,
    Hostfile,
    LocalExecInfo,
    MpiExecInfo,
    PsshExecInfo,
    SshExecInfo,
)

#: How long an async caller waits for its interrupt before giving up.
ASYNC_WAIT = 120


def exec_info(kind: str, output: str, ssh_config: str, hostfile: str) -> ExecInfo:
    way, *_ = kind.split("-")
    common: Dict[str, Any] = dict(pipe_stdout=output, hide_output=True,
                                  exec_async="-async" in kind)
    if way == "local":
        return LocalExecInfo(**common)
    if way == "mpi":
        return MpiExecInfo(nprocs=2, **common)
    common.update(ssh_config=ssh_config, keepalive_interval=1)
    if way == "ssh":
        return SshExecInfo(hosts=Hostfile(path=hostfile).hosts[0], **common)
    return PsshExecInfo(hostfile=hostfile, **common)


def main(kind: str, command: str, output: str, ssh_config: str, hostfile: str) -> None:
    info = exec_info(kind, output, ssh_config, hostfile)
    if kind.endswith("-thread"):
        worker = threading.Thread(target=Exec, args=(command, info))
        worker.start()
        worker.join()
        return
    if kind.endswith("-dropped"):
        Exec(command, info)
        time.sleep(ASYNC_WAIT)
        return
    node = Exec(command, info)
    if info.exec_async:
        time.sleep(ASYNC_WAIT)
        node.kill()  # not reached when interrupted, as the test means to


if __name__ == "__main__":
    main(*sys.argv[1:])

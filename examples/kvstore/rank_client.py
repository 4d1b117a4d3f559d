#!/usr/bin/env python3
"""One MPI rank of the deploy check: store a key unique to this rank in one service instance
and read it back.

Needs no mpi4py: the rank comes from the launcher's environment (``PMI_RANK`` under MPICH's
Hydra and Intel MPI, ``OMPI_COMM_WORLD_RANK`` under Open MPI, ``PMIX_RANK`` under PMIx
launchers). Rank R uses instance ``R % N`` of the N given, so neighbouring ranks, which
share a host, talk to different hosts. Prints one line,
``rank R host H -> instance I ok``, and exits 0; any other answer, or no answer, prints
what happened instead of ``ok`` and exits 1.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import List, Optional, Tuple

from kvstore import Client, parse_address

RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
INSTANCES_VARIABLE = "KVSTORE_INSTANCES"


def rank_from_env() -> int:
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    raise SystemExit(f"rank_client: no rank in the environment ({', '.join(RANK_VARIABLES)}): "
                     "run me under mpiexec")


def check(rank: int, instances: List[Tuple[str, int]], job: str) -> str:
    """Talk to this rank's instance; what to print after ``-> instance I``."""
    address = instances[rank % len(instances)]
    key = f"{job}/rank{rank}"
    value = f"rank {rank} pid {os.getpid()} on {socket.gethostname()}"
    try:
        with Client(address) as client:
            stored = client.request(f"SET {key} {value}")
            if stored != "OK":
                return f"SET answered {stored!r}"
            got = client.request(f"GET {key}")
    except OSError as e:
        return f"cannot talk to {address[0]}:{address[1]}: {e}"
    return "ok" if got == f"VALUE {value}" else f"GET answered {got!r}, expected {value!r}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", default=os.environ.get(INSTANCES_VARIABLE, ""),
                        help=f"HOST:PORT,HOST:PORT,... (default ${INSTANCES_VARIABLE})")
    parser.add_argument("--job", default="job", help="prefix of the keys, unique per run")
    args = parser.parse_args(argv)
    try:
        instances = [parse_address(item) for item in args.instances.split(",") if item]
    except ValueError as e:
        parser.error(str(e))
    if not instances:
        parser.error(f"no service instances: give --instances or ${INSTANCES_VARIABLE}")
    rank = rank_from_env()
    outcome = check(rank, instances, args.job)
    print(f"rank {rank} host {socket.gethostname()} -> instance {rank % len(instances)} "
          f"{outcome}", flush=True)
    return 0 if outcome == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())

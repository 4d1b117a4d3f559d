"""Which gateway serves which targets: ClusterShell's ``topology.conf``, or an even split.

The ``[routes]`` section names, on each line, gateways and the hosts behind
them, in our host syntax (``gw[1-2]: node[1-64]``; ``=`` works as ``:``, ``#``
and ``;`` start comments). The line whose gateways name this machine
(``admin: gw[1-2]``), or a first line that leads only to gateways, is the
root's own and says nothing more than the others.
One level of gateways is supported: a gateway behind another one is refused by
line, not half-served. A target on no line is reached directly.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from .errors import ExecInfoError, HostfileError
from .hostfile import expand, is_local_name
from .info import PathLike


class TopologyError(ExecInfoError):
    """A topology file that cannot be read; ``path`` and ``line`` say where."""

    def __init__(self, path: str, line: int, message: str) -> None:
        self.path, self.line = path, line
        super().__init__("topology", f"{path}, line {line}: {message}")


@dataclass
class Route:
    """Gateways that each can serve any of ``targets``."""

    gateways: List[str]
    targets: List[str]


_LINE = re.compile(r"^(?P<left>[^:=]*)[:=](?P<right>.*)$")


def load(path: str) -> List[Route]:
    """The routes of a topology file, checked line by line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ExecInfoError("topology", f"{path}: cannot be read: {e}") from None
    routes: List[Tuple[int, Route]] = []
    section = None
    for number, raw in enumerate(lines, 1):
        text = re.split(r"\s[#;]|^[#;]", raw, maxsplit=1)[0].strip()
        if not text:
            continue
        if text.startswith("["):
            if not text.endswith("]"):
                raise TopologyError(path, number, f"{raw.strip()!r} is not a [section] line")
            section = text[1:-1].strip().lower()
            continue
        if section is None:
            raise TopologyError(path, number, "a route before any [routes] section")
        if section != "routes":
            continue
        match = _LINE.match(text)
        if match is None:
            raise TopologyError(path, number, f"{raw.strip()!r} is not 'gateways: targets'")
        sides = []
        for side in ("left", "right"):
            expr = match[side].strip()
            if not expr:
                what = "gateways" if side == "left" else "targets"
                raise TopologyError(path, number, f"the {what} are missing")
            try:
                sides.append([h for part in expr.split() for h in expand(part)])
            except HostfileError as e:
                raise TopologyError(path, number, str(e)) from None
        routes.append((number, Route(*sides)))
    if section is None:
        raise TopologyError(path, max(len(lines), 1), "no [routes] section")
    return _one_level(path, routes)


def _here(name: str) -> bool:
    return is_local_name(name) or name == socket.gethostname()


def _one_level(path: str, numbered: List[Tuple[int, Route]]) -> List[Route]:
    """The routes but the root's own; a gateway behind a gateway is refused.

    The root's line names this machine, or is the first line and leads only to
    gateways of other lines (``admin: gw[1-4]`` written on another machine).
    """
    gateways = {g for _, r in numbered for g in r.gateways}
    routes = [(n, r) for k, (n, r) in enumerate(numbered)
              if not (any(_here(g) for g in r.gateways)
                      or (k == 0 and all(t in gateways for t in r.targets)))]
    ours = {g for _, r in routes for g in r.gateways}
    for number, route in routes:
        nested = [t for t in route.targets if t in ours]
        if nested:
            raise TopologyError(path, number, f"{nested[0]} is a gateway of another line: "
                                "fabexec runs one level of gateways")
    return [r for _, r in routes]


def split_evenly(gateways: Sequence[str], targets: Sequence[str]) -> Dict[str, List[str]]:
    """``targets`` in contiguous shares as equal as can be, one per gateway (as given).

    Contiguous, so that neighbours in a host list (a rack) share their gateway.
    """
    shares: Dict[str, List[str]] = {}
    count = min(len(gateways), len(targets))
    start = 0
    for k in range(count):
        size = len(targets) // count + (1 if k < len(targets) % count else 0)
        shares[gateways[k]] = list(targets[start:start + size])
        start += size
    return shares


@dataclass
class Plan:
    """Who serves whom: each gateway's share, who may stand in for it, who goes direct."""

    shares: Dict[str, List[str]]
    peers: Dict[str, List[str]]
    direct: List[str]


def plan(targets: Sequence[str], gateways: Sequence[str] = (),
         topology: Optional[PathLike] = None) -> Plan:
    """Shares of ``targets`` for a list of gateways (all peers), or by a topology file."""
    if topology is None:
        gws = list(dict.fromkeys(gateways))
        return Plan(split_evenly(gws, targets), {g: gws for g in gws}, [])
    shares: Dict[str, List[str]] = {}
    peers: Dict[str, List[str]] = {}
    taken = set()
    for route in load(os.fspath(topology)):
        routed = set(route.targets)
        mine = [t for t in targets if t in routed and t not in taken]
        taken.update(mine)
        for gateway, share in split_evenly(route.gateways, mine).items():
            shares.setdefault(gateway, []).extend(share)
        for gateway in route.gateways:
            peers.setdefault(gateway, [])
            peers[gateway] += [g for g in route.gateways if g not in peers[gateway]]
    return Plan(shares, peers, [t for t in targets if t not in taken])

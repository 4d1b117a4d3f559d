"""Which hosts a command runs on: a hostfile, hostfile text or a list of names.

A drop-in for jarvis-util's ``Hostfile`` (same names and keywords), with a
stricter syntax that says where it is wrong. One host per line; ``#`` starts a
comment; several hosts may share a line when separated by commas. A name may
hold bracket ranges, ``node-[01-04,7]``, expanded in order (several brackets
give their cartesian product). An MPI slot count follows as ``node:4`` or
``node slots=4``. IP addresses are looked up only when asked for, so a
hostfile of names that do not resolve here can still be built and saved.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import socket
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from fabexec.errors import HostfileError, HostLookupError

__all__ = ["MAX_HOSTS", "Hostfile", "expand", "fold", "is_local_name"]

#: The most hosts one expression may expand to: a typo such as ``[1-1000000]``
#: fails at once instead of filling the memory.
MAX_HOSTS = 100_000

_LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*")
_NAME_PART = re.compile(r"[A-Za-z0-9._-]*")
_BRACKET = re.compile(r"(\[[^\[\]]*\])")
_RANGE = re.compile(r"(\d+)(?:-(\d+))?")
_SLOTS = re.compile(r"\d+")

HostList = List[str]
SlotList = List[Optional[int]]
PathArg = Union[str, "os.PathLike[str]"]


class _Where:
    """Where an expression came from, to name it in errors."""

    __slots__ = ("path", "line")

    def __init__(self, path: Optional[str], line: Optional[int]) -> None:
        self.path, self.line = path, line

    def error(self, message: str, text: str) -> HostfileError:
        return HostfileError(message, path=self.path, line=self.line, text=text)


def _split_commas(expr: str, where: _Where) -> List[str]:
    """Split at the commas outside brackets (those inside separate range items)."""
    if "[" not in expr and "]" not in expr:
        return expr.split(",")
    items, depth, start = [], 0, 0
    for i, char in enumerate(expr):
        if char == "[":
            depth += 1
            if depth > 1:
                raise where.error("brackets cannot be nested", expr)
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise where.error("']' without a matching '['", expr)
        elif char == "," and depth == 0:
            items.append(expr[start:i])
            start = i + 1
    if depth:
        raise where.error("'[' without a matching ']'", expr)
    items.append(expr[start:])
    return items


def _parse_slots(value: str, item: str, where: _Where) -> int:
    if not _SLOTS.fullmatch(value) or int(value) < 1:
        raise where.error(f"slots must be a whole number of at least 1, not {value!r}", item)
    return int(value)


def _split_slots(item: str, where: _Where) -> Tuple[str, Optional[int]]:
    """Split ``name:N`` or ``name slots=N`` into the name and the slot count."""
    words = item.split()
    name, slots = words[0], None
    for word in words[1:]:
        if not word.startswith("slots="):
            raise where.error(
                f"unexpected {word!r}: after a host only 'slots=N' may follow "
                "(separate several hosts with commas or put one per line)",
                item,
            )
        if slots is not None:
            raise where.error("slots given twice", item)
        slots = _parse_slots(word[len("slots="):], item, where)
    if name.count(":") == 1:  # two or more colons make an IPv6 address
        name, value = name.split(":")
        if slots is not None:
            raise where.error("slots given twice", item)
        slots = _parse_slots(value, item, where)
    return name, slots


def _check_literal(part: str, item: str, where: _Where) -> None:
    """Reject characters no host name has, before they reach a shell or ``ssh``."""
    if _NAME_PART.fullmatch(part) is None:
        char = next(c for c in part if _NAME_PART.fullmatch(c) is None)
        raise where.error(
            f"invalid character {char!r} in host name "
            "(allowed: letters, digits, '-', '.', '_')",
            item,
        )


def _bracket_values(group: str, item: str, where: _Where) -> Tuple[List[Tuple[int, int, int]], int]:
    """Parse ``[1-3,07]`` into (low, high, width) triples and the count they give."""
    spans, count = [], 0
    if not group:
        raise where.error("empty range '[]'", item)
    for piece in group.split(","):
        match = _RANGE.fullmatch(piece)
        if match is None:
            problem = "empty range item" if not piece else f"range {piece!r} is not numeric"
            raise where.error(f"{problem} (write e.g. [1-4,7])", item)
        low_text, high_text = match.group(1), match.group(2) or match.group(1)
        low, high = int(low_text), int(high_text)
        if low > high:
            raise where.error(f"range {piece!r} is reversed (write {high}-{low})", item)
        width = len(low_text) if len(low_text) == len(high_text) else 0
        spans.append((low, high, width))
        count += high - low + 1
    return spans, count


def _expand_name(name: str, item: str, where: _Where) -> HostList:
    """Expand the bracket ranges of one host name, in order."""
    if "[" not in name and "]" not in name:
        if _PLAIN_NAME.fullmatch(name):
            return [name]
        if name.count(":") > 1:
            return [_check_ipv6(name, item, where)]
    if not name:
        raise where.error("missing host name", item)
    parts = _BRACKET.split(name)
    literals, groups = parts[0::2], parts[1::2]
    for literal in literals:
        _check_literal(literal, item, where)
    if name.startswith("-"):  # ssh and mpiexec would read it as an option
        raise where.error("a host name must start with a letter, digit, '.' or '_'", item)
    total, choices = 1, []
    for group in groups:
        spans, count = _bracket_values(group[1:-1], item, where)
        total *= count
        if total > MAX_HOSTS:
            raise where.error(f"expands to more than {MAX_HOSTS} hosts", item)
        choices.append(
            [str(n).zfill(width) for low, high, width in spans for n in range(low, high + 1)]
        )
    if not groups:
        return [name]
    return [
        "".join(itertools.chain.from_iterable(zip(literals, values + ("",))))
        for values in itertools.product(*choices)
    ]


def _check_ipv6(name: str, item: str, where: _Where) -> str:
    try:
        ipaddress.IPv6Address(name)
    except ValueError:
        raise where.error("not a valid IPv6 address", item) from None
    return name


def _parse_expr(expr: str, where: _Where, hosts: HostList, slots: SlotList) -> None:
    """Append the hosts (and slot counts) of one comma-separated expression."""
    for raw in _split_commas(expr, where):
        item = raw.strip()
        if not item:
            raise where.error("empty host name (a stray comma?)", expr)
        name, count = _split_slots(item, where)
        names = _expand_name(name, item, where)
        hosts.extend(names)
        slots.extend([count] * len(names))


def _parse_text(text: str, path: Optional[str]) -> Tuple[HostList, SlotList]:
    """Parse hostfile text: one expression a line, blank lines and comments skipped."""
    hosts: HostList = []
    slots: SlotList = []
    for number, line in enumerate(text.splitlines(), start=1):
        if "#" in line:
            line = line.partition("#")[0]
        line = line.strip()
        if not line:
            continue
        if _PLAIN_NAME.fullmatch(line):  # the common case, kept fast
            hosts.append(line)
            slots.append(None)
        else:
            _parse_expr(line, _Where(path, number), hosts, slots)
    return hosts, slots


def _parse_list(entries: Union[str, Sequence[str]]) -> Tuple[HostList, SlotList]:
    """Parse ``all_hosts``: one expression, or a list of them (no comments)."""
    if isinstance(entries, str):
        entries = [entries]
    hosts: HostList = []
    slots: SlotList = []
    for entry in entries:
        if not isinstance(entry, str):
            raise HostfileError(
                f"host names must be strings, not {type(entry).__name__}", text=repr(entry)
            )
        _parse_expr(entry, _Where(None, None), hosts, slots)
    return hosts, slots


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as stream:
            return stream.read()
    except FileNotFoundError:
        raise HostfileError("hostfile not found", path=path) from None
    except UnicodeDecodeError as err:
        raise HostfileError(f"not a UTF-8 text file ({err.reason})", path=path) from None
    except OSError as err:
        raise HostfileError(f"cannot read hostfile: {err.strerror or err}", path=path) from None


def _as_path(value: object, keyword: str) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise HostfileError(f"{keyword} must be a path, not {type(value).__name__}")
    return os.path.expanduser(os.fspath(value))


def is_local_name(host: str) -> bool:
    """True when ``host`` names this machine: ``localhost``, a loopback literal, its hostname."""
    name = host.lower()
    return name in _LOCAL_NAMES or name == socket.gethostname().lower()


def expand(expr: str) -> List[str]:
    """The host names of one expression, e.g. ``'node[01-03],login'``.

    Slot counts are accepted and dropped; a syntax error raises `HostfileError`.
    """
    hosts: HostList = []
    _parse_expr(expr, _Where(None, None), hosts, [])
    return hosts


_DIGITS = re.compile(r"(\d+)")

Run = Tuple[int, int, int]  # low, high, width (0: not zero-padded)


def fold(hosts: Iterable[str]) -> str:
    """The shortest range expression of ``hosts``, the inverse of `expand`.

    ``node1,node2,node3,node7`` gives ``node[1-3,7]``; zero padding is kept
    (``n01,n02`` gives ``n[01-02]``, ``node00001`` to ``node10000`` one range
    ``node[00001-10000]``); names numbered in several places fold to products
    (``rack[01-02]n[01-04]``). It shows a set: repeated names appear once and
    numbers ascend, but names of different shapes keep the order in which they
    first appear, so ``login,node[1-4]`` stays in that order.
    """
    shapes: Dict[Tuple[str, ...], List[Tuple[str, ...]]] = {}
    for host in dict.fromkeys(hosts):
        parts = [host] if ":" in host else _DIGITS.split(host)  # an IPv6 literal stays whole
        shapes.setdefault(tuple(parts[0::2]), []).append(tuple(parts[1::2]))
    return ",".join(_fold_shape(literals, numbers) for literals, numbers in shapes.items())


def _fold_shape(literals: Tuple[str, ...], numbers: List[Tuple[str, ...]]) -> str:
    """The products covering names of one shape (same text between the numbers).

    Merging greedily along one axis after another is not always minimal, and
    which order does better depends on the names: both are tried.
    """
    axes = list(range(len(literals) - 1))
    spelled = (_spell(literals, _merged(numbers, order)) for order in (axes[::-1], axes))
    return min(spelled, key=len)


def _merged(numbers: List[Tuple[str, ...]], order: List[int]) -> List[Tuple[frozenset, ...]]:
    """Products of digit strings covering ``numbers``, merged along ``order`` until stable."""
    terms = [tuple(frozenset([field]) for field in fields) for fields in numbers]
    while True:
        before = len(terms)
        for axis in order:
            terms = _merge_along(terms, axis)
        if len(terms) == before:
            return terms


def _spell(literals: Tuple[str, ...], terms: List[Tuple[frozenset, ...]]) -> str:
    texts = []
    for term in sorted(terms, key=lambda t: [_run_key(r) for fields in t for r in _runs(fields)]):
        ranges = [_range_text(fields) for fields in term] + [""]
        texts.append("".join(itertools.chain.from_iterable(zip(literals, ranges))))
    return ",".join(texts)


def _merge_along(terms: List[Tuple[frozenset, ...]], axis: int) -> List[Tuple[frozenset, ...]]:
    """Unite the terms equal everywhere but on ``axis``: A x B + C x B = (A + C) x B."""
    merged: Dict[tuple, set] = {}
    for term in terms:
        merged.setdefault(term[:axis] + term[axis + 1:], set()).update(term[axis])
    return [rest[:axis] + (frozenset(values),) + rest[axis:] for rest, values in merged.items()]


def _runs(fields: frozenset) -> List[Run]:
    """The fewest ``low-high`` runs spelling these digit strings, padding kept.

    A zero-padded number (``007``) belongs to its width only; unpadded ones
    continuing the highest padded number of a width join its run, as long as
    its top keeps the width: ``09`` and ``8-12`` give ``8-9,09-12``, as
    ClusterShell writes them (``01-150`` would read unpadded).
    """
    by_width: Dict[int, List[int]] = {}
    for field in fields:
        width = len(field) if len(field) > 1 and field[0] == "0" else 0
        by_width.setdefault(width, []).append(int(field))
    runs = {width: _consecutive(values) for width, values in by_width.items()}
    padded_tops = {(width, high): i for width, found in runs.items() if width
                   for i, (_low, high) in enumerate(found)}
    free = []
    for low, high in runs.pop(0, []):
        for width in range(len(str(low)), len(str(high)) + 1):
            at, start = padded_tops.get((width, 10 ** (width - 1) - 1)), 10 ** (width - 1)
            if at is not None and low <= start and high < 10 ** width:
                runs[width][at] = (runs[width][at][0], high)  # 09 + 10-12 = 09-12
                high = start - 1
                break
        if low <= high:
            free.append((low, high, 0))
    padded = [(low, high, width) for width, found in runs.items() for low, high in found]
    return sorted(free + padded, key=_run_key)


def _consecutive(values: List[int]) -> List[Tuple[int, int]]:
    runs: List[List[int]] = []
    for value in sorted(values):
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return [(low, high) for low, high in runs]


def _run_key(run: Run) -> Tuple[int, int]:
    return run[0], run[2]


def _range_text(fields: frozenset) -> str:
    runs = _runs(fields)
    text = ",".join(f"{low:0{width}d}" if low == high else f"{low:0{width}d}-{high:0{width}d}"
                    for low, high, width in runs)
    return text if len(fields) == 1 else f"[{text}]"


class Hostfile:
    """An ordered list of hosts, possibly the first ``n`` of a larger hostfile.

    Give at most one of ``hostfile`` (or its newer name ``path``), ``text``
    and ``all_hosts``; with none, the hostfile holds ``localhost``.
    ``all_hosts_ip`` sets the IPs instead of looking them up, and
    ``find_ips=False`` uses the names themselves as IPs.
    """

    def __init__(
        self,
        hostfile: Optional[PathArg] = None,
        all_hosts: Optional[Union[str, Sequence[str]]] = None,
        all_hosts_ip: Optional[Sequence[str]] = None,
        text: Optional[str] = None,
        find_ips: bool = True,
        *,
        path: Optional[PathArg] = None,
    ) -> None:
        file = self._file_argument(hostfile, path)
        given = [name for name, value in (("path", file), ("text", text),
                                          ("all_hosts", all_hosts)) if value is not None]
        if len(given) > 1:
            raise HostfileError(f"give only one of path, text and all_hosts, not {given}")
        self.path: Optional[str] = file
        self.find_ips = find_ips and all_hosts_ip is None
        if file is not None:
            hosts, slots = _parse_text(_read(file), file)
        elif text is not None:
            if not isinstance(text, str):
                raise HostfileError(f"text must be a str, not {type(text).__name__}")
            hosts, slots = _parse_text(text, None)
        elif all_hosts is not None:
            hosts, slots = _parse_list(all_hosts)
        else:
            hosts, slots = ["localhost"], [None]
        self._all, self._hosts, self._slots = hosts, hosts, slots
        self._all_ips = self._given_ips(all_hosts_ip, len(hosts))
        self._resolved: Dict[str, str] = {}
        self._slot_map: Optional[Dict[str, Optional[int]]] = None

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> Hostfile:
        """The hosts of the Slurm, PBS or Flux job this process runs in (`fabexec.jobhosts`).

        Slot counts come from the job (tasks per node, repeated PBS lines);
        outside any job `NotInJobError` says what was looked for.
        """
        from .jobhosts import job_hosts

        hosts, slots = job_hosts(environ)
        hostfile = cls(all_hosts=hosts)
        hostfile._slots = slots
        return hostfile

    @staticmethod
    def _file_argument(hostfile: Optional[PathArg], path: Optional[PathArg]) -> Optional[str]:
        """``hostfile`` is jarvis-util's name for ``path``; both must agree."""
        old = None if hostfile is None else _as_path(hostfile, "hostfile")
        new = None if path is None else _as_path(path, "path")
        if old is not None and new is not None and old != new:
            raise HostfileError(f"hostfile={old!r} and path={new!r} disagree; give one")
        given = new if new is not None else old
        # Absolute, as in jarvis-util: an MPI launcher run in another ``cwd`` reads it.
        return None if given is None else os.path.abspath(given)

    @staticmethod
    def _given_ips(ips: Optional[Sequence[str]], count: int) -> Optional[List[str]]:
        if ips is None:
            return None
        ips = [ips] if isinstance(ips, str) else list(ips)
        if len(ips) != count:
            raise HostfileError(f"all_hosts_ip has {len(ips)} entries for {count} hosts")
        return ips

    def _view(self, hosts: HostList, all_hosts: HostList, slots: SlotList,
              ips: Optional[List[str]], path: Optional[str]) -> Hostfile:
        """A Hostfile sharing this one's settings and resolved IPs."""
        view = Hostfile.__new__(Hostfile)
        view.path, view.find_ips = path, self.find_ips
        view._all, view._hosts, view._slots, view._all_ips = all_hosts, hosts, slots, ips
        view._resolved, view._slot_map = self._resolved, None
        return view

    # ---- the hosts --------------------------------------------------------

    @property
    def hosts(self) -> List[str]:
        """The host names this hostfile runs on (the subset's, for a subset)."""
        return self._hosts

    @hosts.setter
    def hosts(self, names: Sequence[str]) -> None:
        """Run on ``names`` instead (jarvis-util code assigns it); slots, IPs follow names."""
        hosts, slots = _parse_list(names)
        known = self.slots
        if self._all_ips is not None:  # given IPs are kept by name from now on
            self._resolved.update(zip(self._all, self._all_ips))
            self._all_ips = None
        self._hosts = hosts
        self._slots = [n if n is not None else known.get(h) for h, n in zip(hosts, slots)]
        self._slot_map = None

    @property
    def all_hosts(self) -> List[str]:
        """Every host of the hostfile this one was cut from."""
        return self._all

    @property
    def slots(self) -> Dict[str, Optional[int]]:
        """Slot count of each host (None where none was given)."""
        if self._slot_map is None:
            self._slot_map = dict(zip(self._hosts, self._slots))
        return self._slot_map

    @property
    def hosts_ip(self) -> List[str]:
        """The IPs of `hosts`, looked up now if needed (`HostLookupError` if one fails)."""
        if self._all_ips is not None:
            return self._all_ips[: len(self._hosts)]
        return [self._ip(host) for host in self._hosts]

    @property
    def all_hosts_ip(self) -> List[str]:
        """The IPs of `all_hosts`, looked up now if needed."""
        if self._all_ips is not None:
            return self._all_ips
        return [self._ip(host) for host in self._all]

    def _ip(self, host: str) -> str:
        if host in self._resolved:
            return self._resolved[host]
        if not self.find_ips:
            return host
        if host not in self._resolved:
            self._resolved[host] = self._resolve(host)
        return self._resolved[host]

    def _resolve(self, host: str) -> str:
        if ":" in host:  # an IPv6 literal; gethostbyname knows IPv4 only
            return host
        try:
            return socket.gethostbyname(host)
        except OSError as err:
            reason = getattr(err, "strerror", None) or str(err)
            raise HostLookupError(f"cannot resolve host name ({reason})",
                                  path=self.path, text=host) from None

    # ---- deriving hostfiles ----------------------------------------------

    def subset(self, count: int) -> Hostfile:
        """The first ``count`` hosts, as a subset of this hostfile's `all_hosts`.

        Past the end it holds every host, as a slice (and jarvis-util) does.
        """
        if isinstance(count, bool) or not isinstance(count, int):
            raise HostfileError(f"subset() takes a number of hosts, not {count!r}", path=self.path)
        if count < 1:
            raise HostfileError(f"subset({count}): the count must be at least 1", path=self.path)
        return self._view(self._hosts[:count], self._all, self._slots,
                          self._all_ips, self.path)

    def copy(self) -> Hostfile:
        """An independent Hostfile with the same hosts, slots, IPs and path."""
        hosts = list(self._hosts)
        all_hosts = hosts if self._all is self._hosts else list(self._all)
        ips = None if self._all_ips is None else list(self._all_ips)
        copy = self._view(hosts, all_hosts, list(self._slots), ips, self.path)
        copy._resolved = dict(self._resolved)
        return copy

    def list(self) -> List[Hostfile]:
        """One single-host Hostfile per host, in order (as jarvis-util)."""
        ips = self._all_ips
        return [
            self._view([host], [host], [slots], None if ips is None else [ips[i]], None)
            for i, (host, slots) in enumerate(zip(self._hosts, self._slots))
        ]

    def enumerate(self) -> Iterator[Tuple[int, Hostfile]]:
        return enumerate(self.list())

    # ---- questions ------------------------------------------------------

    def is_subset(self) -> bool:
        """True when this holds only the first hosts of a larger hostfile."""
        return len(self._hosts) != len(self._all)

    def is_local(self) -> bool:
        """True when every host is this machine, so nothing needs SSH."""
        return all(is_local_name(host) for host in self._hosts)

    def host_str(self, sep: str = ",") -> str:
        return sep.join(self._hosts)

    def ip_str(self, sep: str = ",") -> str:
        return sep.join(self.hosts_ip)

    # ---- saving ------------------------------------------------------------

    def save(self, path: PathArg) -> Hostfile:
        """Write the hosts one per line (``host:N`` with a slot count) and load from there.

        Slots are written as ``host:N`` because MPICH's ``mpiexec -f`` rejects
        ``slots=N``; both read back. The folder must exist already.
        """
        target = _as_path(path, "path")
        slots = self._slots[: len(self._hosts)]
        lines = [host if n is None else f"{host}:{n}" for host, n in zip(self._hosts, slots)]
        try:
            with open(target, "w", encoding="utf-8") as stream:
                stream.write("".join(line + "\n" for line in lines))
        except FileNotFoundError:
            folder = os.path.dirname(os.path.abspath(target))
            raise HostfileError(f"folder {folder!r} does not exist; create it first",
                                path=target) from None
        except OSError as err:
            raise HostfileError(f"cannot write hostfile: {err.strerror or err}",
                                path=target) from None
        self._all, self._slots, self.path = self._hosts, slots, os.path.abspath(target)
        if self._all_ips is not None:
            self._all_ips = self._all_ips[: len(self._hosts)]
        return self

    # ---- Python protocols --------------------------------------------------

    def __len__(self) -> int:
        return len(self._hosts)

    def __getitem__(self, index: int) -> str:
        return self._hosts[index]

    def __iter__(self) -> Iterator[str]:
        return iter(self._hosts)

    def __eq__(self, other: object) -> bool:
        """Same hosts in the same order; against a Hostfile, also the same slots."""
        if isinstance(other, Hostfile):
            count = len(self._hosts)
            return self._hosts == other._hosts and self._slots[:count] == other._slots[:count]
        if isinstance(other, (list, tuple)):
            return self._hosts == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal hostfiles may change (save)

    def __str__(self) -> str:
        return self.host_str(",")

    def __repr__(self) -> str:
        shown: Iterable[str] = self._hosts
        if len(self._hosts) > 6:
            shown = [*self._hosts[:3], "...", self._hosts[-1]]
        text = ", ".join(shown)
        extra = f", subset of {len(self._all)}" if self.is_subset() else ""
        if self.path is not None:
            extra += f", path={self.path!r}"
        return f"<Hostfile {len(self._hosts)} host(s): {text}{extra}>"

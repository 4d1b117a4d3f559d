"""The ``fabexec`` command: argument parsing and printing over the library.

It adds no behaviour the library lacks (as ClusterShell's CLI/ sits apart from
its library): every option maps onto an `ExecInfo` keyword, `Put`/`Get` or the
sandbox. A wrong input is one line on stderr and a nonzero status, never a
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
from typing import IO, Callable, Dict, Iterator, List, Optional, Sequence, Set, Union

from . import sandbox
from .errors import FabexecError
from .exec import Exec
from .hostfile import Hostfile, expand, fold
from .info import ExecInfo, ExecType
from .tee import LineJoiner
from .transfer import Get, Put

#: Exit status for a wrong input (as argparse uses).
USAGE_ERROR = 2

#: Progress is shown on a terminal from this many hosts on.
PROGRESS_FROM = 8


class CliError(Exception):
    """A wrong input, said in one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise CliError(f"{self.prog}: error: {message}")


def _host_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("-H", "-w", "--hosts", help="host expression, e.g. node[01-16],login")
    where.add_argument("-f", "--hostfile", help="a hostfile (one host per line, ranges allowed)")
    where.add_argument("-j", "--job", action="store_true",
                       help="the nodes of the Slurm, PBS or Flux job this runs in (as pdsh -j)")
    parser.add_argument("-x", "--exclude", metavar="HOSTS",
                        help="leave out these hosts (an expression, as pdsh's -x)")
    parser.add_argument("-u", "--user", help="login user")
    parser.add_argument("-i", "--key", help="private key file")
    parser.add_argument("-p", "--port", type=int, help="SSH port")
    parser.add_argument("-F", "--ssh-config", help="an ssh_config file to use")
    parser.add_argument("-J", "--proxy-jump", metavar="HOPS",
                        help="reach the hosts through these bastions (as ssh -J)")
    parser.add_argument("-A", "--forward-agent", action="store_true", default=None,
                        help="forward the local ssh-agent to the command (as ssh -A)")
    parser.add_argument("--connect-timeout", type=float, default=10.0, metavar="S")
    parser.add_argument("--max-parallel", "--fanout", type=int, metavar="N",
                        help="hosts in flight at once")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fabexec", description="Run a shell command here, over SSH on "
                     "many hosts, or as an MPI job.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run a command", description="Run COMMAND "
                              "locally, on every host given, or with --mpi as an MPI job.")
    _host_options(run)
    tree = run.add_mutually_exclusive_group()
    tree.add_argument("--gateways", metavar="LIST", help="run through these gateways, the "
                      "hosts split evenly among them (an expression: gw[1-4])")
    tree.add_argument("--topology", metavar="FILE", help="run through the gateways of a "
                      "ClusterShell topology.conf ([routes] gw[1-2]: node[1-64])")
    run.add_argument("--mpi", action="store_true", help="run as an MPI job")
    run.add_argument("-n", "--nprocs", type=int, help="MPI ranks")
    run.add_argument("--ppn", type=int, help="MPI ranks per node")
    run.add_argument("-e", "--env", action="append", default=[], metavar="NAME=VALUE")
    run.add_argument("--cwd", help="folder to run in")
    run.add_argument("--sudo", action="store_true", help="run under sudo")
    run.add_argument("--timeout", type=float, metavar="S", help="stop after S seconds")
    run.add_argument("--out", metavar="FILE", help="write stdout there ({host} per host)")
    run.add_argument("--err", metavar="FILE", help="write stderr there ({host} per host)")
    run.add_argument("-q", "--quiet", action="store_true", help="print no output")
    run.add_argument("--label", choices=["bracket", "colon"], default="bracket",
                     help="how live lines name their host: '[host] line', or 'host: line' "
                     "as pdsh and clush print it (for dshbak and clubak)")
    shown = run.add_mutually_exclusive_group()
    shown.add_argument("-b", "--gather", action="store_true",
                       help="show identical outputs once, with their hosts")
    run.add_argument("--live", action="store_true",
                     help="with -b: print the lines as they come too, the summary at the end")
    shown.add_argument("--json", action="store_true",
                       help="one JSON object a line per host, as each host ends")
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- COMMAND")

    hosts = commands.add_parser("hosts", help="print the hosts of an expression")
    hosts.add_argument("expr", help="e.g. node[01-04],login")

    for name, what in (("put", "copy local files to the hosts"),
                       ("get", "copy files from the hosts (one folder per host)")):
        copy = commands.add_parser(name, help=what)
        _host_options(copy)
        copy.add_argument("src", nargs="+")
        copy.add_argument("dst")

    cluster = commands.add_parser("cluster", help="the local sandbox cluster of sshd daemons")
    cluster.add_argument("action", choices=["up", "down", "status"])
    cluster.add_argument("-n", "--nodes", type=int, default=4)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return _COMMANDS[args.command](args)
    except CliError as e:
        print(e, file=sys.stderr)
        return USAGE_ERROR
    except (FabexecError, OSError) as e:
        print(f"fabexec: error: {e}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("fabexec: interrupted", file=sys.stderr)
        return 130


# --------------------------------------------------------------------------- run

def _exec_info(args: argparse.Namespace, **more: object) -> ExecInfo:
    # ExecInfo parses both (an expression keeps its slot counts, ``n1:4``).
    hosts, hostfile = args.hosts or None, args.hostfile or None
    if getattr(args, "job", False):
        hosts = Hostfile.from_env()
    many = hosts is not None or hostfile is not None
    if args.exclude is not None:
        hosts, hostfile = _excluding(hosts, hostfile, args.exclude), None
    exec_type = ExecType.PSSH if many else ExecType.LOCAL
    if getattr(args, "mpi", False):
        exec_type = ExecType.MPI
    options = dict(exec_type=exec_type, hosts=hosts, hostfile=hostfile, user=args.user,
                   pkey=args.key, port=args.port, ssh_config=args.ssh_config,
                   connect_timeout=args.connect_timeout, proxy_jump=args.proxy_jump,
                   forward_agent=args.forward_agent)
    if args.max_parallel is not None:
        options["max_parallel"] = args.max_parallel
    for name in ("gateways", "topology"):
        if getattr(args, name, None) is not None:
            options[name] = getattr(args, name)
    return ExecInfo(**options, **more)  # type: ignore[arg-type]


def _excluding(hosts: Union[str, Hostfile, None], hostfile: Optional[str],
               exclude: str) -> Hostfile:
    """The hosts given less those of ``exclude``, in order, repeats and slot counts kept."""
    if hosts is None and hostfile is None:
        raise CliError("fabexec: error: -x/--exclude needs hosts (-H/-w, -f or -j)")
    if isinstance(hosts, Hostfile):
        given = hosts
    else:
        given = Hostfile(all_hosts=hosts) if hosts is not None else Hostfile(path=hostfile)
    left, slots = set(given.hosts) - set(expand(exclude)), given.slots
    if not left:
        raise CliError(f"fabexec: error: -x {exclude!r} leaves no host")
    return Hostfile(all_hosts=[host if slots.get(host) is None else f"{host}:{slots[host]}"
                               for host in given.hosts if host in left])


def _env(pairs: List[str]) -> Dict[str, str]:
    env = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep:
            raise CliError(f"fabexec run: error: -e {pair!r}: expected NAME=VALUE")
        env[name] = value
    return env


def _run(args: argparse.Namespace) -> int:
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        raise CliError("fabexec run: error: no COMMAND given (write it after --)")
    if args.mpi and args.nprocs is None:
        raise CliError("fabexec run: error: --mpi needs -n/--nprocs")
    gathering = args.gather or args.json
    if args.live and not args.gather:
        raise CliError("fabexec run: error: --live goes with -b/--gather")
    info = _exec_info(
        args, nprocs=args.nprocs, ppn=args.ppn, env=_env(args.env) or None, cwd=args.cwd,
        sudo=args.sudo, timeout=args.timeout, pipe_stdout=args.out, pipe_stderr=args.err,
        hide_output=args.quiet or (gathering and not args.live), collect_output=gathering,
        exec_async=True)
    screen = _Screen(sys.stdout, sys.stderr)
    with screen.streams(args.label == "colon" and not args.mpi, info):
        node = Exec(" ".join(cmd), info)  # its live output goes through the screen
        _wait_with_progress(node, screen, _json_lines(node, screen) if args.json else None)
    if args.gather:
        _print_gathered(node)
    return node.exit_code or 0


#: The version of the objects ``--json`` prints, raised when a field changes meaning.
JSON_SCHEMA = 1


def _json_lines(node: Exec, screen: _Screen) -> Callable[[bool], None]:
    """What prints one JSON object a line per host as it ends (JSON Lines); with
    ``final``, the hosts not printed yet. Each line is a host's whole record."""
    printed: Set[str] = set()

    def report(final: bool) -> None:
        results = node.ended()
        for host in node.hosts if final else list(results):
            if host in printed or host not in results:
                continue
            printed.add(host)
            error = results[host].error
            screen.write(screen.stdout, json.dumps({
                "schema": JSON_SCHEMA, "host": host, "exit_code": results[host].exit_code,
                "stdout": node.stdout[host], "stderr": node.stderr[host],
                "error": None if error is None else str(error)}) + "\n")
    return report


class _Screen:
    """Our stdout and stderr as a person sees them on a terminal.

    The hosts' live lines and the progress line share the terminal: before a
    line of output the progress line is cleared, after it the progress line is
    drawn again, so that neither ever cuts into the other. With ``colon``
    labels every line reads ``host: line``, as pdsh and clush print it.
    """

    def __init__(self, stdout: IO[str], stderr: IO[str]) -> None:
        self.stdout, self.stderr = stdout, stderr
        self.progress = ""  # what the progress line shows now ('' when none)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def streams(self, colon: bool, info: ExecInfo) -> Iterator[None]:
        """Within: `sys.stdout` and `sys.stderr` write through this screen."""
        hosts = set(info.targets.hosts) if info.exec_type is not ExecType.LOCAL else set()
        # One host's lines come unnamed (several hosts' name theirs): name them here.
        label = next(iter(hosts)) if colon and len(hosts) == 1 else None
        out = _Stream(self, self.stdout, colon, label)
        err = _Stream(self, self.stderr, colon, label)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):  # type: ignore
            yield
        out.close()
        err.close()

    def write(self, stream: IO[str], text: str) -> None:
        """``text`` on ``stream``, whole lines never mixed with the progress line."""
        with self._lock:
            shown = self.progress and stream.isatty()
            if shown:
                self.stderr.write("\r\033[K")
                self.stderr.flush()
            stream.write(text)
            stream.flush()
            if shown:
                self.stderr.write(self.progress)
                self.stderr.flush()

    def show_progress(self, text: str) -> None:
        """Draw (or, with '', clear) the progress line on stderr."""
        with self._lock:
            self.progress = text
            self.stderr.write("\r\033[K" + text)
            self.stderr.flush()


class _Stream:
    """One of our streams as `Exec` sees it: labels rewritten, writes through the `_Screen`."""

    def __init__(self, screen: _Screen, stream: IO[str], colon: bool,
                 host: Optional[str]) -> None:
        self.screen, self.stream, self.colon = screen, stream, colon
        self._lines = LineJoiner(f"{host}: ", "\n") if host is not None else None

    def write(self, text: str) -> int:
        if self._lines is not None:
            text = self._lines.feed(text)
        elif self.colon:
            text = _colon_labels(text)
        if text:
            self.screen.write(self.stream, text)
        return len(text)

    def close(self) -> None:
        if self._lines is not None:
            self.screen.write(self.stream, self._lines.flush())

    def flush(self) -> None:
        pass  # every write is flushed at once

    def isatty(self) -> bool:
        return self.stream.isatty()


def _colon_labels(text: str) -> str:
    """``[host] line`` lines (as several hosts' live output reads) as ``host: line``.

    A host name holds no ``]``, so the first ``] `` of a line ends its label.
    """
    lines = text.split("\n")
    return "\n".join(f"{line[1:].replace('] ', ': ', 1)}" if line.startswith("[") else line
                     for line in lines)


def _wait_with_progress(node: Exec, screen: _Screen,
                        report: Optional[Callable[[bool], None]] = None) -> None:
    """Wait; on a terminal with many hosts, keep a progress line on stderr;
    ``report`` the hosts as they end.

    The waiting stays in this thread, so that ^C reaches `Exec.wait`, which
    ends the commands everywhere; a helper thread draws the line and reports.
    """
    progress = len(node.hosts) >= PROGRESS_FROM and screen.stderr.isatty()
    if not progress and report is None:
        node.wait()
        return
    finished = threading.Event()

    def watch() -> None:
        while not finished.wait(0.1):
            if report is not None:
                report(False)
            if progress:
                done, failed, total = node.progress()
                screen.show_progress(f"[{done}/{total} done, {failed} failed, "
                                     f"{total - done} running]")

    watcher = threading.Thread(target=watch, daemon=True, name="fabexec-progress")
    watcher.start()
    try:
        node.wait()
    finally:
        finished.set()
        watcher.join()
        if progress:
            screen.show_progress("")
    if report is not None:
        report(True)


def _print_gathered(node: Exec) -> None:
    """Identical outputs once, under the hosts that produced them (as ``clush -b``)."""
    groups: Dict[tuple, List[str]] = {}
    for host in node.hosts:
        stderr, error = node.stderr[host], node.errors.get(host)
        if error is not None:  # its line in stderr names the host: the same error groups
            stderr = stderr.replace(str(error), str(error).replace(host, "{host}"))
        key = (node.stdout[host], stderr, node.exit_codes[host])
        groups.setdefault(key, []).append(host)
    for (stdout, stderr, code), hosts in groups.items():
        title = f"{fold(hosts)} ({len(hosts)})" + (f" exit {code}" if code else "")
        print("-" * len(title))
        print(title)
        print("-" * len(title))
        sys.stdout.write(stdout)
        if stderr:
            sys.stderr.write(stderr)


# --------------------------------------------------------------------------- others

def _hosts(args: argparse.Namespace) -> int:
    for host in expand(args.expr):
        print(host)
    return 0


def _copy(args: argparse.Namespace) -> int:
    info = _exec_info(args)
    action = Put if args.command == "put" else Get
    result = action(args.src, args.dst, info)
    for error in result.errors.values():
        print(f"fabexec: {error}", file=sys.stderr)  # a HostError's text names its host
    return result.exit_code or 0


def _cluster(args: argparse.Namespace) -> int:
    if args.action == "up":
        try:
            cluster = sandbox.up(args.nodes)
        except ValueError as e:  # a node count out of range, a state folder sshd cannot use
            raise CliError(f"fabexec cluster: error: {e}") from None
        print(f"{len(cluster.hosts)} nodes up: {fold(cluster.hosts)}")
        print(f"  hostfile:   {cluster.hostfile}")
        print(f"  ssh_config: {cluster.ssh_config}")
        print(f"try: fabexec run -f {cluster.hostfile} -F {cluster.ssh_config} -- hostname")
    elif args.action == "down":
        sandbox.down()
        print("sandbox down")
    else:
        try:
            cluster = sandbox.SandboxCluster.load(sandbox.default_state_dir())
        except FileNotFoundError:
            print("no sandbox (fabexec cluster up starts one)")
            return 1
        for host, status in cluster.status().items():
            print(f"{host}\t{status}")
    return 0


_COMMANDS = {"run": _run, "hosts": _hosts, "put": _copy, "get": _copy, "cluster": _cluster}

#!/usr/bin/env python3
"""A small key-value server: the real networked daemon that ``inv deploy`` runs on every host.

Standard library only, so that copying this file to a host with any Python 3.7+ is the
whole installation. One asyncio loop serves every client at once over a line protocol,
one request and one answer per line (UTF-8):

    PING          -> PONG
    SET key value -> OK              (the value is the rest of the line, blanks included)
    GET key       -> VALUE value | NOT_FOUND
    STATS         -> STATS keys=N clients=N connections=N commands=N uptime=S
    QUIT          -> BYE, then the server closes the connection
    anything else -> ERROR reason

Run ``kvstore.py serve --bind ADDR --port N --log FILE --pidfile FILE``: the PID file is
written once the port is bound (so its presence means "listening") and removed at exit;
SIGTERM or SIGINT closes the listener and every connection, then exits 0. A server that
cannot start (the port is taken, the address is not this host's) says why on stderr *and*
in the log, since nobody reads a daemon's stderr, and exits 1. ``kvstore.py ping
ADDR:PORT`` asks a running server.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time
from typing import Dict, List, Optional, Set, Tuple

#: Longest request line; a longer one is refused and the connection closed.
MAX_LINE = 64 * 1024
#: Seconds a client may stay silent before the server drops it.
IDLE_TIMEOUT = 300.0

log = logging.getLogger("kvstore")


class Store:
    """The data and the counters one server keeps; every method answers one request line."""

    def __init__(self) -> None:
        self.data: Dict[str, str] = {}
        self.started = time.monotonic()
        self.clients = 0
        self.connections = 0
        self.commands = 0

    def answer(self, line: str) -> Tuple[str, bool]:
        """The reply to ``line`` and whether the connection stays open."""
        self.commands += 1
        verb, _, rest = line.partition(" ")
        verb = verb.upper()
        if verb == "PING" and not rest:
            return "PONG", True
        if verb == "SET":
            key, blank, value = rest.partition(" ")
            if not key or not blank:
                return "ERROR usage: SET key value", True
            self.data[key] = value
            return "OK", True
        if verb == "GET":
            if not rest or " " in rest:
                return "ERROR usage: GET key", True
            value = self.data.get(rest)
            return ("NOT_FOUND" if value is None else f"VALUE {value}"), True
        if verb == "STATS" and not rest:
            return (f"STATS keys={len(self.data)} clients={self.clients} "
                    f"connections={self.connections} commands={self.commands} "
                    f"uptime={time.monotonic() - self.started:.1f}"), True
        if verb == "QUIT" and not rest:
            return "BYE", False
        return f"ERROR unknown request {line[:80]!r}", True


class Server:
    """One listening socket, its clients, and a clean stop on SIGTERM."""

    def __init__(self, bind: str, port: int, pidfile: str) -> None:
        self.bind, self.port, self.pidfile = bind, port, pidfile
        self.store = Store()
        self.writers: Set[asyncio.StreamWriter] = set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _stop_on, sig, stop)
        server = await asyncio.start_server(self.serve_client, self.bind, self.port,
                                            limit=MAX_LINE, reuse_address=True)
        write_pidfile(self.pidfile)
        log.info("listening on %s:%d, pid %d", self.bind, self.port, os.getpid())
        try:
            await stop.wait()
        finally:
            server.close()
            for writer in list(self.writers):
                writer.close()
            await server.wait_closed()
            os.unlink(self.pidfile)
            store = self.store
            log.info("stopped: %d keys, %d connections, %d commands", len(store.data),
                     store.connections, store.commands)

    async def serve_client(self, reader: asyncio.StreamReader,
                           writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        self.writers.add(writer)
        self.store.clients += 1
        self.store.connections += 1
        log.info("client %s connected (%d now)", peer, self.store.clients)
        try:
            await self.converse(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.LimitOverrunError:
            writer.write(b"ERROR line longer than %d bytes\n" % MAX_LINE)
        except asyncio.TimeoutError:
            log.info("client %s idle for %.0f s: dropped", peer, IDLE_TIMEOUT)
        finally:
            self.store.clients -= 1
            self.writers.discard(writer)
            writer.close()
            log.info("client %s left", peer)

    async def converse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            raw = await asyncio.wait_for(reader.readuntil(b"\n"), IDLE_TIMEOUT)
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            reply, stay = self.store.answer(line)
            log.debug("%s -> %s", line[:80], reply[:80])
            writer.write(reply.encode() + b"\n")
            await writer.drain()
            if not stay:
                return


def _stop_on(sig: int, stop: asyncio.Event) -> None:
    log.info("%s: shutting down", signal.Signals(sig).name)
    stop.set()


def write_pidfile(path: str) -> None:
    """Write our PID; refuse when the file names another live process (a second start)."""
    try:
        with open(path) as f:
            other = int(f.read().split()[0])
        os.kill(other, 0)
    except (OSError, ValueError, IndexError):
        pass  # no file, garbage, or a dead process: ours to take
    else:
        if other != os.getpid():
            raise RuntimeError(f"{path} names running process {other}: already started?")
    partial = f"{path}.{os.getpid()}"
    with open(partial, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(partial, path)


# --------------------------------------------------------------------------- client

class Client:
    """A blocking connection to one server, one request line at a time."""

    def __init__(self, address: Tuple[str, int], timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.stream = self.sock.makefile("rwb")

    def request(self, line: str) -> str:
        self.stream.write(line.encode() + b"\n")
        self.stream.flush()
        reply = self.stream.readline(MAX_LINE + 1)
        if not reply.endswith(b"\n"):
            raise ConnectionError(f"connection closed before an answer to {line[:40]!r}")
        return reply.decode("utf-8", "replace").rstrip("\n")

    def close(self) -> None:
        try:
            self.request("QUIT")
        except OSError:
            pass
        self.stream.close()
        self.sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_address(text: str) -> Tuple[str, int]:
    """``host:port`` (IPv4 or a name) as a socket address."""
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host, int(port)


# --------------------------------------------------------------------------- command line

def port_number(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return int(text)


def arguments(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kvstore", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server until SIGTERM")
    serve.add_argument("--bind", required=True, help="address to listen on")
    serve.add_argument("--port", required=True, type=port_number)
    serve.add_argument("--log", required=True, help="log file (appended to)")
    serve.add_argument("--pidfile", required=True)
    serve.add_argument("--debug", action="store_true", help="log every request")
    ping = commands.add_parser("ping", help="ask a server for PONG")
    ping.add_argument("address", type=parse_address, help="HOST:PORT")
    return parser.parse_args(argv)


def start_log(path: str, debug: bool) -> None:
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s {socket.gethostname()} kvstore[%(process)d] %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if debug else logging.INFO)


def serve(args: argparse.Namespace) -> int:
    start_log(args.log, args.debug)
    try:
        asyncio.run(Server(args.bind, args.port, args.pidfile).run())
    except (OSError, RuntimeError) as e:
        why = os.strerror(e.errno) if getattr(e, "errno", None) else str(e)
        reason = f"cannot serve on {args.bind}:{args.port}: {why}"
        log.error("%s", reason)
        print(f"kvstore: {reason}", file=sys.stderr)
        return 1
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = arguments(argv)
    if args.command == "serve":
        return serve(args)
    try:
        with Client(args.address) as client:
            print(client.request("PING"))
    except OSError as e:
        print(f"kvstore: {args.address[0]}:{args.address[1]}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

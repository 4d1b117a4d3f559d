"""fabexec: run a shell command the same way locally, over SSH, on many hosts or under MPI."""

from .connections import ConnectionPool, close_connections
from .connections import pool as connection_pool
from .errors import (
    AuthenticationError,
    CommandError,
    CommandTimeoutError,
    ConnectionLostError,
    ExecInfoError,
    FabexecError,
    HostError,
    HostfileError,
    HostKeyError,
    HostLookupError,
    HostStoppedAnsweringError,
    MpiError,
    OutputWriteError,
    PartialCopyError,
    PathNotFoundError,
    TransferError,
    TransferFailedError,
    UnreachableError,
)
from .exec import Exec
from .hostfile import Hostfile
from .info import ExecInfo, ExecType, LocalExecInfo, MpiExecInfo, PsshExecInfo, SshExecInfo
from .transfer import Get, Pscp, Put, Scp, Transfer

__all__ = [
    "AuthenticationError",
    "CommandError",
    "CommandTimeoutError",
    "ConnectionLostError",
    "ConnectionPool",
    "Exec",
    "ExecInfo",
    "ExecInfoError",
    "ExecType",
    "FabexecError",
    "Get",
    "HostError",
    "HostKeyError",
    "HostLookupError",
    "HostStoppedAnsweringError",
    "Hostfile",
    "HostfileError",
    "LocalExecInfo",
    "MpiError",
    "MpiExecInfo",
    "OutputWriteError",
    "PartialCopyError",
    "PathNotFoundError",
    "Pscp",
    "PsshExecInfo",
    "Put",
    "Scp",
    "SshExecInfo",
    "Transfer",
    "TransferError",
    "TransferFailedError",
    "UnreachableError",
    "close_connections",
    "connection_pool",
]

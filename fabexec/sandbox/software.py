"""What the machine needs before a node can start: packages, login users, sudo rules, keys.

All of it stays after `~fabexec.sandbox.down`, like an installed package: the next ``up``
finds it in place and only checks it.
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any, Optional, Tuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from ..errors import SandboxError
from .cluster import write_private

SSHD = Path("/usr/sbin/sshd")
SUDO = Path("/usr/bin/sudo")
#: The login user of a sandbox started as root; it has passwordless sudo.
USER = "fabexec"
#: A second login user, whose sudo asks for `Cluster.sudo_password`.
PASSWORD_USER = "fabexec-pw"
#: Machine-wide, like the users: every state folder must see the same password.
PASSWORD_FILE = Path("/var/lib/fabexec/sandbox-sudo-password")
SUDOERS_FILE = Path("/etc/sudoers.d/fabexec-sandbox")


def run(*argv: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a setup command; `SandboxError` with its message when ``check`` and it fails."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kwargs)
    if check and proc.returncode != 0:
        raise SandboxError(f"`{shlex.join(argv)}` failed ({proc.returncode}): "
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def ensure_software(as_root: bool) -> None:
    """Install openssh-server (and sudo, as root) with apt-get when they are missing."""
    needed = {"openssh-server": SSHD, "sudo": SUDO} if as_root else {"openssh-server": SSHD}
    missing = [package for package, path in needed.items() if not path.exists()]
    if not missing:
        return
    if not as_root:
        raise SandboxError(f"{SSHD} is missing: install it with "
                           "`sudo apt-get install -y openssh-server`, or run up() as root")
    if shutil.which("apt-get") is None:
        raise SandboxError(f"{', '.join(missing)} missing and no apt-get here: install "
                           f"them with this system's package manager")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ("apt-get", "install", "-y", *missing)
    if run(*install, check=False, env=env).returncode != 0:
        run("apt-get", "update", env=env)  # the package lists may be missing or stale
        run(*install, env=env)


def openssh_version() -> Tuple[int, int]:
    """The installed sshd's (major, minor), (0, 0) when it does not say."""
    proc = run(str(SSHD), "-V", check=False)
    found = re.search(r"OpenSSH_(\d+)\.(\d+)", proc.stderr + proc.stdout)
    return (int(found[1]), int(found[2])) if found else (0, 0)


def _shadow_password(user: str) -> Optional[str]:
    """The user's password field in /etc/shadow, None when the user does not exist."""
    proc = run("getent", "shadow", user, check=False)
    return proc.stdout.split(":")[1] if proc.returncode == 0 else None


def _ensure_user(user: str) -> bool:
    """Create the user with a home and bash unless it exists; True when created now."""
    if _shadow_password(user) is not None:
        return False
    created = run("useradd", "--create-home", "--user-group", "--shell", "/bin/bash", user,
                  check=False)
    if created.returncode != 0 and _shadow_password(user) is None:  # not made by a rival `up`
        raise SandboxError(f"cannot create user {user}: {created.stderr.strip()}")
    return created.returncode == 0


def ensure_users() -> str:
    """Create the sandbox's users and sudo rules (once); return fabexec-pw's password.

    ``fabexec`` gets ``*`` as password: no password login, yet not locked (``!``),
    which sshd refuses with UsePAM no.
    """
    _ensure_user(USER)
    if _shadow_password(USER) != "*":
        run("usermod", "--password", "*", USER)
    created = _ensure_user(PASSWORD_USER)
    password, new_password = _sudo_password()
    if created or new_password or _shadow_password(PASSWORD_USER) in ("", "!", "*"):
        run("chpasswd", input=f"{PASSWORD_USER}:{password}\n")
    _ensure_sudoers()
    return password


def _sudo_password() -> Tuple[str, bool]:
    """fabexec-pw's password from PASSWORD_FILE, made now if absent (then True).

    Written aside and linked into place, so a rival `up` reads a whole file or makes it.
    """
    PASSWORD_FILE.parent.mkdir(parents=True, exist_ok=True)
    draft = PASSWORD_FILE.with_name(f"{PASSWORD_FILE.name}.{os.getpid()}")
    password = secrets.token_urlsafe(12)
    write_private(draft, f"{password}\n".encode())
    try:
        os.link(draft, PASSWORD_FILE)
    except FileExistsError:
        return PASSWORD_FILE.read_text().strip(), False
    finally:
        draft.unlink()
    return password, True


def _ensure_sudoers() -> None:
    """Write the sudo rules, checked by visudo first: a broken file would break all sudo.

    No credential caching for fabexec-pw, so every sudo of it needs the password.
    """
    rules = (
        "# Written by fabexec.sandbox: the sandbox's login users.\n"
        f"{USER} ALL=(ALL:ALL) NOPASSWD: ALL\n"
        f"Defaults:{PASSWORD_USER} timestamp_timeout=0, lecture=never\n"
        f"{PASSWORD_USER} ALL=(ALL:ALL) ALL\n"
    )
    if SUDOERS_FILE.exists() and SUDOERS_FILE.read_text() == rules:
        return
    draft = SUDOERS_FILE.with_name(SUDOERS_FILE.name + ".new")  # sudo skips names with a dot
    draft.write_text(rules)
    draft.chmod(0o440)
    run("visudo", "-c", "-q", "-f", str(draft))
    os.replace(draft, SUDOERS_FILE)


def keypair(path: Path, comment: str) -> str:
    """The public line of the ed25519 key at ``path``, generated (with ``.pub``) if absent."""
    public = path.with_name(path.name + ".pub")
    if path.exists() and public.exists():
        return public.read_text().strip()
    key = Ed25519PrivateKey.generate()
    write_private(path, key.private_bytes(Encoding.PEM, PrivateFormat.OpenSSH, NoEncryption()))
    line = key.public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    public.write_text(f"{line} {comment}\n")
    return f"{line} {comment}"

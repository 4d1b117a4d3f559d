"""SshConfigFile answers exactly as paramiko's SSHConfig, whatever the file's shape."""

import pytest
from paramiko import SSHConfig

from fabexec.sshconfig import SshConfigFile

GENERATED = "\n".join(
    f"Host node{i} n{i}\n    HostName 10.0.0.{i}\n    Port {2200 + i}\n" for i in range(1, 40)
)

CONFIGS = {
    "one block per node, defaults last": GENERATED + """
Host *
    User ops
    Port 22
    IdentityFile ~/.ssh/id_ed25519
""",
    "defaults first, then literal blocks": """
Host *
    ServerAliveInterval 5
""" + GENERATED,
    "wildcards and negations between literal blocks": """
Host node1
    User first
Host node* !node2
    User wild
    IdentityFile ~/.ssh/wild
Host node2 node3
    User literal
    IdentityFile ~/.ssh/literal
Host n?
    Port 2022
Host [ab]x
    User bracket
Host *
    IdentityFile ~/.ssh/default
""",
    "Match blocks keep their place": """
Host node1
    User one
Match host node1,node2
    Port 1234
    User matched
Host node2
    User two
Match all
    ConnectTimeout 7
""",
    "percent tokens": """
Host gw
    HostName %h.example.org
    ProxyJump jump
Host *
    User %r
""",
    "a name its own line excludes, a home folder, canonical names": """
Host node3 !node3
    Port 9
Host node2
    User ~
Host c*
    CanonicalizeHostname yes
    CanonicalDomains example.invalid
    CanonicalizeFallbackLocal yes
Host cx
    Port 3
""",
    "the same name in several blocks": """
Host a
    IdentityFile ~/.ssh/one
Host b a
    IdentityFile ~/.ssh/two
    User both
Host a
    User later
""",
}

HOSTS = ["node1", "node2", "node3", "node4", "node39", "n1", "n5", "ax", "bx", "cx", "gw",
         "a", "b", "unknown", "NODE1", "10.0.0.1"]


@pytest.mark.parametrize("text", CONFIGS.values(), ids=list(CONFIGS))
@pytest.mark.parametrize("host", HOSTS)
def test_lookup_matches_paramiko(text: str, host: str) -> None:
    assert SshConfigFile.from_text(text).lookup(host) == SSHConfig.from_text(text).lookup(host)


@pytest.mark.parametrize("text", CONFIGS.values(), ids=list(CONFIGS))
@pytest.mark.parametrize("host", HOSTS)
def test_route_is_what_paramiko_looks_up(text: str, host: str) -> None:
    """What a gateway is told of a target: HostName, Port and User as paramiko's whole
    look-up gives them, whether `route` read the blocks itself or asked `lookup`."""
    theirs = SSHConfig.from_text(text).lookup(host)
    assert SshConfigFile.from_text(text).route(host) == {
        key: theirs[key] for key in ("hostname", "port", "user") if key in theirs}


def test_files_parsed_one_after_the_other_keep_their_order() -> None:
    ours, theirs = SshConfigFile(), SSHConfig()
    for text in ("Host node1\n    User user-file\n", "Host *\n    User system\n    Port 2\n"
                 "Host node1\n    Port 1\n"):
        ours.parse(iter(text.splitlines(True)))
        theirs.parse(iter(text.splitlines(True)))
    assert ours.lookup("node1") == theirs.lookup("node1") == {
        "hostname": "node1", "user": "user-file", "port": "2"}

"""An error's words are never empty: a host's reason always says something."""

from fabexec.errors import reason


def test_an_exception_without_words_is_named_by_its_type() -> None:
    assert reason(EOFError()) == "EOFError"
    assert f"connection lost: {reason(ConnectionResetError())}" == \
        "connection lost: ConnectionResetError"


def test_an_exception_with_words_keeps_them() -> None:
    assert reason(OSError("Socket is closed")) == "Socket is closed"

"""The warm CLI process (deployments/warm.py) runs a `handoff` command exactly as the command run
by itself does: same output, same exit code, same rows; it serves only its own user, and it never
runs code that changed on disk after it imported it (the caller then runs the command itself)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments.door import ROOT, SOCKET_ENV, address, request

HANDOFF = Path(sys.executable).with_name("handoff")

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux sockets")

ONBOARD = ["onboard", "--client", "Warm Dental", "--segment", "smb", "--offer", "Growth",
           "--owner", "va@northwind.example", "--backup", "va2@northwind.example",
           "--contact", "pat@warm.example", "--no-flow"]
SESSION = [ONBOARD, ["artifact", "add", "1", "deal_terms_confirmed", "--note", "signed"],
           ["artifact", "add", "1", "no_such_item"], ["status", "1", "--json"],
           ["blocker", "open", "1", "--type", "missing_access"], ["status", "99"],
           ["followup", "log", "1", "--kind", "response", "--note", "née Ø"], ["--help"]]


class Warm:
    """One warm process on a socket name of its own."""

    def __init__(self, log: Path, home: Path | None = None) -> None:
        """`home`: configured as the calls on that home are (its spares prepare for them)."""
        self.name = f"test-{uuid.uuid4().hex[:12]}"
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "deployments.warm"], cwd=ROOT,
            env=calls_env(home, self.name) if home else {**os.environ, SOCKET_ENV: self.name},
            stdout=log.open("wb"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while "ready" not in log.read_text():
            assert self.process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(30)
        return self.log.read_text()


@pytest.fixture
def warm(tmp_path: Path) -> Iterator[Warm]:
    process = Warm(tmp_path / "warm.log")
    yield process
    process.stop()


def calls_env(home: Path, socket_name: str) -> dict[str, str]:
    return {**os.environ, "HANDOFF_HOME": str(home),
            "HANDOFF_DATABASE_URL": f"sqlite:///{home / 'handoff.db'}",
            "PREFECT_API_URL": "http://127.0.0.1:9/api", SOCKET_ENV: socket_name}


def handoff(home: Path, args: list[str], socket_name: str) -> tuple[int, str, str]:
    done = subprocess.run([str(HANDOFF), *args], env=calls_env(home, socket_name),
                          capture_output=True, text=True, timeout=120, cwd=home)
    return done.returncode, done.stdout, done.stderr


def rows(home: Path) -> list[tuple[object, ...]]:
    import sqlite3

    with sqlite3.connect(home / "handoff.db") as conn:
        return [*conn.execute("SELECT key, note FROM artifacts ORDER BY id"),
                *conn.execute("SELECT kind, actor FROM events ORDER BY id")]


@pytest.mark.parametrize("prepared", [True, False], ids=["spares-prepared", "other-settings"])
def test_a_command_run_warm_is_the_command_run_cold(tmp_path: Path, prepared: bool) -> None:
    """Spares prepared for the calls' settings (their database's engine warmed up on a scratch
    copy), or for other settings (what they prepared is dropped): the same commands either way,
    and the warm-up never touches the caller's database."""
    homes = {"cold": tmp_path / "cold", "warm": tmp_path / "warm"}
    for home in homes.values():
        home.mkdir()
    warm = Warm(tmp_path / "warm.log", homes["warm"] if prepared else None)
    request = handoff(homes["warm"], ["--help"], warm.name)  # a spare has warmed up
    assert request[0] == 0 and not (homes["warm"] / "handoff.db").exists()
    results: dict[str, list[tuple[int, str, str]]] = {}
    for how, home in homes.items():
        name = warm.name if how == "warm" else "nobody-listens-here"
        assert handoff(home, ["db", "upgrade"], name)[0] == 0
        results[how] = [handoff(home, args, name) for args in SESSION]

    for args, cold, hot in zip(SESSION, results["cold"], results["warm"], strict=True):
        assert scrub(hot, homes["warm"]) == scrub(cold, homes["cold"]), args
    codes = [code for code, _out, _err in results["warm"]]
    assert codes == [0, 0, 2, 0, 0, 2, 0, 0]  # the refusals are refusals, warm or cold
    assert results["warm"][2][2].count("\n") == 1 and "no_such_item" in results["warm"][2][2]
    assert rows(homes["warm"]) and _no_ids(rows(homes["warm"])) == _no_ids(rows(homes["cold"]))
    # Every warm call ran in the warm process (its count), none fell back to running cold.
    assert f"stopped after {len(SESSION) + 2} commands" in warm.stop()


# What differs between two runs of the same command a few seconds apart: the home, times, links.
VARYING = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+\+00:00|\b\d\d:\d\d\b|\d+h\d\dm|/c/\d+-[\w-]+")


def scrub(result: tuple[int, str, str], home: Path) -> tuple[int, str, str]:
    code, out, err = result
    return (code, *(VARYING.sub("~", text.replace(str(home), "HOME")) for text in (out, err)))


def _no_ids(found: list[tuple[object, ...]]) -> list[tuple[object, ...]]:
    return [tuple(v for v in row if not isinstance(v, int)) for row in found]


def test_changed_code_is_never_run_warm(tmp_path: Path, warm: Warm) -> None:
    home = tmp_path / "home"
    home.mkdir()
    assert handoff(home, ["db", "upgrade"], warm.name)[0] == 0
    module = Path(ROOT) / "deployments" / "cli" / "artifact.py"
    stat = module.stat()
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    try:
        code, out, err = handoff(home, ["status", "--json"], warm.name)
    finally:
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (code, err) == (0, "") and out.strip().startswith("[")  # ran, in the caller
    warm.process.wait(30)  # and the warm process, stale, is gone
    assert "code changed on disk" in warm.stop() and "stopped after 1 commands" in warm.stop()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to become another user")
def test_another_user_is_not_served(warm: Warm) -> None:
    pid = os.fork()
    if pid == 0:  # the child becomes `nobody` and asks the warm process to run a command
        answered = 1
        try:
            os.setuid(65534)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.settimeout(30)
                os.environ[SOCKET_ENV] = warm.name
                conn.connect(address(uid=0))
                try:
                    conn.sendmsg([request([str(HANDOFF), "status"])],
                                 [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                   (0).to_bytes(4, sys.byteorder) * 3)])
                    answered = 1 if conn.recv(4) else 0
                except (BrokenPipeError, ConnectionResetError):
                    answered = 0  # hung up on before the request was even read
        except BaseException as exc:  # noqa: BLE001 - the parent sees a non-zero exit
            print(f"the other user's call failed: {exc!r}", file=sys.stderr)
            answered = 3
        finally:
            os._exit(answered)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0  # closed without a word
    assert "stopped after 0 commands" in warm.stop()


def test_spares_end_with_the_warm_process(warm: Warm, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed outright, the warm process takes its spares along: none is left holding the
    socket (a new warm process could not bind it) nor serving."""
    pid = warm.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children")
    deadline = time.monotonic() + 60
    while len(spares := children.read_text().split()) < 2:  # forked right after "ready"
        assert time.monotonic() < deadline, spares
        time.sleep(0.1)
    warm.process.kill()
    warm.process.wait(30)
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{spare}").exists() and "Z" not in _state(spare) for spare in spares):
        assert time.monotonic() < deadline, spares
        time.sleep(0.1)
    monkeypatch.setenv(SOCKET_ENV, warm.name)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe, \
            pytest.raises(ConnectionRefusedError):
        probe.connect(address())


def _state(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"

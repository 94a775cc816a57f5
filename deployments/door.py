"""The `handoff` command's front door: hand the command to the warm CLI process when one serves
this checkout (`make run` starts it: deployments/warm.py), else run it in this process.

A `handoff` process that imports the command line itself spends most of a second importing
SQLAlchemy's ORM, the models, the playbook's pydantic models and Typer before it reads a row. The
warm process has imported them once; for each command it forks a child that runs the command
with this process's arguments, environment, working directory and terminal (stdin, stdout and
stderr are passed over the socket), so the command behaves exactly as if run here, and this
process exits with the child's exit code once the child has finished (its writes committed).

This module imports only the standard library's socket layer: it is what every call pays.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEADER = struct.Struct("!I")  # length of the request that follows
WORD = struct.Struct("!i")  # the child's pid, then its exit code
STALE = 0  # the warm process's pid word when it will not run the command (its code changed)
# Another socket name than the checkout's own (tests run a warm process of their own with it).
SOCKET_ENV = "HANDOFF_WARM_CLI_SOCKET"


def address(root: str = ROOT, uid: int | None = None) -> str:
    """The warm process's socket: Linux's abstract namespace, one per checkout and user."""
    uid = os.getuid() if uid is None else uid
    name = os.environ.get(SOCKET_ENV) or f"{zlib.crc32(root.encode()):08x}"
    return f"\0handoff-cli-{uid}-{name}"


def request(argv: list[str]) -> bytes:
    """What the warm process needs to run the command as this process would: the checkout,
    the working directory, the arguments and the environment, as NUL-separated fields (none of
    them can hold a NUL; JSON would cost every call its import)."""
    fields = [ROOT, os.getcwd(), str(len(argv)), *argv]
    for key, value in os.environ.items():
        fields += (key, value)
    body = b"\0".join(os.fsencode(field) for field in fields)
    return HEADER.pack(len(body)) + body


def parse(body: bytes) -> dict[str, object]:
    """The request `request` encoded: root, cwd, argv and env (ValueError when malformed)."""
    fields = [os.fsdecode(field) for field in body.split(b"\0")]
    if len(fields) < 3 or not fields[2].isdigit():
        raise ValueError("malformed request")
    count = int(fields[2])
    env = fields[3 + count:]
    if len(fields) < 3 + count or len(env) % 2:
        raise ValueError("malformed request")
    return {"root": fields[0], "cwd": fields[1], "argv": fields[3:3 + count],
            "env": dict(zip(env[::2], env[1::2], strict=True))}


def _read_word(conn: socket.socket) -> int | None:
    data = b""
    while len(data) < WORD.size:
        chunk = conn.recv(WORD.size - len(data))
        if not chunk:
            return None
        data += chunk
    value: int = WORD.unpack(data)[0]
    return value


def run_warm(argv: list[str]) -> int | None:
    """Run the command in the warm process; its exit code, or None when there is none to ask
    (or it declined before starting the command)."""
    if not sys.platform.startswith("linux"):
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(address())
        conn.sendmsg([request(argv)], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                        struct.pack("3i", 0, 1, 2))])
        pid = _read_word(conn)
    except OSError:
        conn.close()
        return None
    if not pid:  # STALE or gone before starting: nothing ran, run it here
        conn.close()
        return None
    while True:
        try:
            code = _read_word(conn)
            break
        except KeyboardInterrupt:  # Ctrl-C reaches this process's group, not the child's
            import signal  # here, not at the top: every call would pay its import

            os.kill(pid, signal.SIGINT)
        except OSError:
            code = None
            break
    conn.close()
    if code is None:
        print("error: the warm handoff process ended before the command finished; run the "
              "command again", file=sys.stderr)
        return 1
    return code


def main() -> None:
    """The `handoff` console script."""
    code = run_warm(sys.argv)
    if code is not None:
        sys.exit(code)
    from deployments.cli import main as run_here

    run_here()

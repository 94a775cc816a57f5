"""The warm CLI process: handoff's command line imported once, one forked child per command.

    python -m deployments.warm        (`make run` starts it beside the runner)

A `handoff` call (deployments/door.py) connects to this process's socket and sends its
arguments, environment, working directory and its stdin, stdout and stderr. This process forks;
the child takes on the caller's terminal, directory and environment and runs the command exactly
as `handoff` would have in-process (settings, playbook and database are read fresh in the child:
nothing is cached here before the fork), sends its exit code, and exits. The caller returns once
the child has finished, so a recorded fact is committed before the VA's prompt comes back.

Only the user who started it may use it (the socket checks the caller's uid). When a module it
imported changed on disk (a `git pull`), it declines the command (the caller runs it itself) and
exits, so no command ever runs stale code.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import struct
import sys
import traceback
from importlib import import_module
from typing import Any

from deployments.door import HEADER, ROOT, STALE, WORD, address

UCRED = struct.Struct("3i")  # pid, uid, gid of the caller (SO_PEERCRED)
MAX_REQUEST = 4 * 1024 * 1024


def preimport() -> dict[str, int]:
    """Import every command module and what it uses; returns the project files imported, with
    their modification times (how staleness is detected)."""
    from deployments.cli import COMMANDS, GROUPS

    for module in {*COMMANDS.values(), *(g[0] for g in GROUPS.values())}:
        import_module(f"deployments.cli.{module}")
    for module in ("db.models", "db.playbook", "db.session", "sqlalchemy.dialects.sqlite",
                   "sqlalchemy.orm", "sqlite3", "yaml", "tasks.onboarding.status",
                   "tasks.portal.links", "tasks.mail.alarm", "tasks.prefect.wake",
                   "tasks.prefect.runs", "tasks.prefect.names"):
        import_module(module)
    try:
        import_module("psycopg")  # PostgreSQL installations
    except ImportError:
        pass
    warm_defaults()
    return project_files()


def warm_defaults() -> None:
    """Do once what every command does first: configure the ORM's mappers, read the shipped
    playbook and build its business calendar. A child whose playbook is another file (or the
    same one, changed since) reads its own: the caches are keyed by path and time, and by the
    calendar's content. Settings read on the way are forgotten: each child reads its caller's."""
    import datetime as dt

    from sqlalchemy.orm import configure_mappers

    from db.playbook import get_playbook
    from db.settings import Settings, get_settings
    from tasks.calendar.clock import warm_calendar

    configure_mappers()
    default = Settings.model_fields["playbook_path"].default
    try:
        warm_calendar(get_playbook(default), dt.datetime.now(dt.UTC))
    except Exception as exc:  # noqa: BLE001 - a broken playbook is each command's to report
        print(f"handoff warm CLI: the shipped playbook was not preloaded: {exc}", flush=True)
    get_settings.cache_clear()


def project_files() -> dict[str, int]:
    """Every imported module file of this checkout (outside its virtualenv), with its mtime."""
    files: dict[str, int] = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if path and path.startswith(ROOT) and "/.venv/" not in path:
            try:
                files[path] = os.stat(path).st_mtime_ns
            except OSError:
                files[path] = -1
    return files


def stale(files: dict[str, int]) -> bool:
    """Whether any imported module changed (or went) since it was imported."""
    for path, mtime in files.items():
        try:
            if os.stat(path).st_mtime_ns != mtime:
                return True
        except OSError:
            return True
    return False


def listen() -> socket.socket:
    """The socket callers connect to; one warm process per checkout and user."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(address())
    sock.listen(64)
    return sock


def receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """The caller's request and its three file descriptors (stdin, stdout, stderr)."""
    fds: list[int] = []
    data, ancillary, _flags, _addr = conn.recvmsg(65536, socket.CMSG_SPACE(3 * 4))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.extend(struct.unpack(f"{len(payload) // 4}i", payload[:len(payload) // 4 * 4]))
    try:
        if len(data) < HEADER.size:
            raise ValueError("short request")
        size = HEADER.unpack(data[:HEADER.size])[0]
        if size > MAX_REQUEST:
            raise ValueError(f"request of {size} bytes")
        body = data[HEADER.size:]
        while len(body) < size:
            chunk = conn.recv(size - len(body))
            if not chunk:
                raise ValueError("request cut short")
            body += chunk
        request = json.loads(body)
        if len(fds) != 3 or request.get("root") != ROOT:
            raise ValueError("not a handoff request for this checkout")
    except (ValueError, json.JSONDecodeError):
        for fd in fds:
            os.close(fd)
        raise
    return request, fds


def run_child(listener: socket.socket, conn: socket.socket, request: dict[str, Any],
              fds: list[int]) -> None:
    """In the forked child: become the caller's `handoff` process, run the command, report."""
    code = 1
    try:
        listener.close()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT
                          else signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stdout = _text(1, line_buffering=os.isatty(1))
        sys.stderr = _text(2, line_buffering=True)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = list(request["argv"])
        conn.sendall(WORD.pack(os.getpid()))
        code = run_command(sys.argv[1:])
    except BaseException:  # noqa: BLE001 - the caller must hear an exit code, whatever happened
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        try:
            conn.sendall(WORD.pack(code))
        finally:
            os._exit(code)


def _text(fd: int, *, line_buffering: bool) -> io.TextIOWrapper:
    """A text stream on the caller's descriptor, as Python sets up its own at start-up."""
    return io.TextIOWrapper(open(fd, "wb", closefd=False),  # noqa: SIM115
                            encoding="utf-8", line_buffering=line_buffering)


def run_command(args: list[str]) -> int:
    """Run `handoff ARGS` as the console script would; its exit code."""
    from deployments.cli import app

    try:
        app(args=args, prog_name="handoff")
    except SystemExit as exc:
        if exc.code is None:
            return 0
        if isinstance(exc.code, int):
            return exc.code
        print(exc.code, file=sys.stderr)
        return 1
    return 0


def reap() -> None:
    """Collect finished children (they report to their caller, not here)."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def serve(listener: socket.socket, files: dict[str, int], served: list[int]) -> None:
    """Accept callers until the code on disk changes or the process is stopped; `served`
    counts the commands run."""
    listener.settimeout(1.0)
    while True:
        reap()
        try:
            conn, _ = listener.accept()
        except TimeoutError:
            continue
        conn.settimeout(None)
        with conn:
            _pid, uid, _gid = UCRED.unpack(conn.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size))
            if uid != os.getuid():
                continue  # another user's process: closed without a word
            try:
                request, fds = receive(conn)
            except (OSError, ValueError):
                continue
            if stale(files):
                for fd in fds:
                    os.close(fd)
                conn.sendall(WORD.pack(STALE))
                print("handoff warm CLI: code changed on disk; exiting", file=sys.stderr,
                      flush=True)
                return
            sys.stdout.flush()
            sys.stderr.flush()
            if os.fork() == 0:
                run_child(listener, conn, request, fds)
            served[0] += 1
            for fd in fds:
                os.close(fd)


def main() -> int:
    """Import everything, listen, serve; Ctrl-C or SIGTERM stops it."""
    if not sys.platform.startswith("linux"):
        print("the warm CLI process needs Linux (abstract sockets, SO_PEERCRED)",
              file=sys.stderr)
        return 2
    files = preimport()  # callers meanwhile run their commands themselves
    try:
        listener = listen()
    except OSError:
        print("handoff warm CLI: another one already serves this checkout", file=sys.stderr)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"handoff warm CLI: ready ({len(files)} modules, pid {os.getpid()})", flush=True)
    served = [0]
    try:
        serve(listener, files, served)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        listener.close()
        print(f"handoff warm CLI: stopped after {served[0]} commands", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())


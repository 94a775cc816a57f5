"""The warm CLI process: handoff's command line imported once, a forked child per command.

    python -m deployments.warm        (`make run` starts it beside the runner)

A `handoff` call (deployments/door.py) connects to this process's socket and sends its
arguments, environment, working directory and its stdin, stdout and stderr. A spare child,
forked from this process before the call came, takes it: it takes on the caller's terminal,
directory and environment, runs the command exactly as `handoff` would have in-process, sends
its exit code and exits. The caller returns once the child has finished, so a recorded fact is
committed before the VA's prompt comes back.

A spare makes itself ready while nobody waits (`SPARES` of them, each replaced once its command
has finished): it runs the VA's record commands (`WARM_UP`) on a scratch copy of a database this
process made at start, so what a fresh child would do the first time (copying the pages it
writes to, building the ORM's and the SQL compiler's per-class caches, Typer's command tree) is
done before the call. Where the configured database is SQLite, that warm-up goes through the
very engine the command will use (its connections opened on the scratch file, then closed), so
the statements come compiled. The warm-up runs with scratch settings (its own home, no Prefect
API) and is undone before the call: settings, environment and connections are the caller's. A
spare that finds the caller's settings other than the ones it prepared for drops what it
prepared.

Only the user who started it may use it (the socket checks the caller's uid). When a module it
imported changed on disk (a `git pull`), it declines the command (the caller runs it itself) and
exits, so no command ever runs stale code.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from importlib import import_module
from pathlib import Path
from typing import Any

from deployments.door import HEADER, ROOT, STALE, WORD, address, parse
from deployments.server import die_with_parent

UCRED = struct.Struct("3i")  # pid, uid, gid of the caller (SO_PEERCRED)
MAX_REQUEST = 4 * 1024 * 1024
SPARES = 2  # children ready at once: a VA's call and another's arriving before a new one is
REPLACE_AFTER = 1.0  # seconds a command runs before its spare is replaced all the same
NOTE = struct.Struct("!ci")  # spare -> this process: (b"T" took a call | b"S" stale, pid)
NO_PREFECT = "http://127.0.0.1:9/api"  # the warm-up wakes nothing: nothing listens there
# The VA's record commands, run on the scratch database by every spare before its call.
SCRATCH_CLIENT = ["onboard", "--client", "Warm Up", "--segment", "smb", "--offer", "Growth",
                  "--owner", "va@warm-up.example", "--backup", "backup@warm-up.example",
                  "--contact", "client@warm-up.example", "--no-flow"]
WARM_UP = [["status", "1"], ["artifact", "add", "1", "deal_terms_confirmed"],
           ["kickoff", "schedule", "1", "--when", "2099-01-05T15:00"],
           ["qa", "record", "1", "--pass"],
           ["blocker", "open", "1", "--type", "missing_access"], ["blocker", "resolve", "1"],
           ["followup", "log", "1", "--kind", "response"], ["status", "1", "--json"]]


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
        request = parse(body)
        if len(fds) != 3 or request["root"] != ROOT:
            raise ValueError("not a handoff request for this checkout")
    except ValueError:
        for fd in fds:
            os.close(fd)
        raise
    return request, fds


def run_child(conn: socket.socket, request: dict[str, Any], fds: list[int],
              prepared: tuple[object, ...] | None) -> None:
    """In the spare that took the call: become the caller's `handoff` process, run the
    command, report its exit code, exit."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
        sys.stdout = _text(1, line_buffering=os.isatty(1))
        sys.stderr = _text(2, line_buffering=True)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        if prepared is None or settings_key() != prepared:
            forget_prepared()
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


def settings_key() -> tuple[object, ...]:
    """What this process's settings are read from: the HANDOFF_ variables and the .env file of
    the working directory (which file, and its time; none when absent). Equal keys, equal
    settings."""
    from db.settings import Settings

    prefix = str(Settings.model_config.get("env_prefix", "")).upper()
    try:
        stat = Path(str(Settings.model_config.get("env_file") or ".env")).stat()
        dotenv: tuple[int, ...] | None = (stat.st_dev, stat.st_ino, stat.st_mtime_ns,
                                          stat.st_size)
    except OSError:
        dotenv = None
    return (tuple(sorted((k.upper(), v) for k, v in os.environ.items()
                         if k.upper().startswith(prefix))), dotenv)


def forget_prepared() -> None:
    """Drop the settings and engines a spare prepared (the caller's differ)."""
    from db.session import dispose_all
    from db.settings import get_settings

    get_settings.cache_clear()
    dispose_all()


def make_scratch(directory: Path) -> Path | None:
    """A migrated database with one client and its open blocker, for the spares' warm-ups
    (made in a child: this process stays as it was imported); None if it could not be made."""
    home = directory / "template"
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with scratch_settings(home):
                code = max(run_quietly(args) for args in (
                    ["db", "upgrade"], SCRATCH_CLIENT,
                    ["blocker", "open", "1", "--type", "missing_access"]))
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        print("handoff warm CLI: no scratch database; spares will not warm up", flush=True)
        return None
    return home


@contextlib.contextmanager
def scratch_settings(home: Path, database_url: str | None = None) -> Iterator[None]:
    """Settings for a warm-up: its own home and database (`database_url`'s engine, redirected,
    is kept), no Prefect API to wake."""
    from db.session import dispose_all
    from db.settings import get_settings

    saved = dict(os.environ)
    os.environ.update({"HANDOFF_HOME": str(home), "PREFECT_API_URL": NO_PREFECT,
                       "HANDOFF_PREFECT_API_URL": NO_PREFECT,
                       "HANDOFF_DATABASE_URL": database_url or f"sqlite:///{home / 'handoff.db'}"})
    get_settings.cache_clear()
    try:
        yield
    finally:
        dispose_all(keep=database_url)
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


def run_quietly(args: list[str]) -> int:
    """A command whose output nobody reads."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return run_command(args)


def warm_up(template: Path | None, files: dict[str, int]) -> tuple[object, ...] | None:
    """In a new spare: the warm-up on a scratch copy, then this process's own settings read
    again (the caller's, usually); their key, or None when nothing was prepared."""
    from db.settings import get_settings

    prepared = None
    try:
        with contextlib.suppress(Exception):
            prepared = settings_key(), get_settings().database_url
        if template is not None:
            scratch = Path(tempfile.mkdtemp(prefix="handoff-warm-"))
            try:
                shutil.copytree(template, scratch, dirs_exist_ok=True)
                url = prepared[1] if prepared and redirectable(prepared[1]) else None
                with scratch_settings(scratch, url), redirected(url, scratch / "handoff.db"):
                    for args in WARM_UP:
                        run_quietly(args)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        get_settings()  # the settings this process was started with, read once more
        files.update({**project_files(), **files})  # and what the warm-up imported
    except Exception as exc:  # noqa: BLE001 - a spare that could not warm up still serves
        print(f"handoff warm CLI: a spare did not warm up: {exc}", file=sys.stderr, flush=True)
        forget_prepared()
        return None
    return prepared[0] if prepared else None


def redirectable(url: str) -> bool:
    """A SQLite database file named plainly (no URI options): its engine can be warmed up."""
    return url.startswith("sqlite") and "?" not in url and ":memory:" not in url


@contextlib.contextmanager
def redirected(url: str | None, scratch_db: Path) -> Iterator[None]:
    """While the block runs, the engine of `url` (a SQLite file) opens its connections on the
    scratch file instead; after it, that engine holds no connection and opens its own file
    again, its dialect initialised and its statements compiled."""
    if url is None:
        yield
        return
    from sqlalchemy import event

    from db.session import get_engine

    engine = get_engine(url)

    def to_scratch(dialect: Any, record: object, cargs: list[object],
                   cparams: dict[str, object]) -> object:
        return dialect.connect(str(scratch_db), *cargs[1:], **cparams)

    event.listen(engine, "do_connect", to_scratch)
    try:
        yield
    finally:
        event.remove(engine, "do_connect", to_scratch)
        engine.dispose()


def listen() -> socket.socket:
    """The socket callers connect to; one warm process per checkout and user."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(address())
    sock.listen(64)
    return sock


def spare(listener: socket.socket, notes: int, files: dict[str, int],
          template: Path | None) -> None:
    """A forked spare: warm up, then take one call (its own user's) and become its process."""
    try:
        for sig in (signal.SIGTERM, signal.SIGCHLD, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})  # blocked by the fork
        parent = os.getppid()
        die_with_parent()  # a spare left alone would hold the socket
        if os.getppid() != parent:
            os._exit(0)
        prepared = warm_up(template, files)
        while True:
            conn, _ = listener.accept()
            _pid, uid, _gid = UCRED.unpack(conn.getsockopt(
                socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size))
            if uid != os.getuid():
                conn.close()  # another user's process: closed without a word
                continue
            try:
                request, fds = receive(conn)
            except (OSError, ValueError):
                conn.close()
                continue
            if stale(files):
                for fd in fds:
                    os.close(fd)
                conn.sendall(WORD.pack(STALE))
                os.write(notes, NOTE.pack(b"S", os.getpid()))
                os._exit(0)
            die_with_parent(0)  # a command, once taken, finishes whatever happens to the parent
            os.write(notes, NOTE.pack(b"T", os.getpid()))
            listener.close()
            os.close(notes)
            run_child(conn, request, fds, prepared)
    except BaseException:  # noqa: BLE001 - a spare never returns into the parent's loop
        traceback.print_exc()
    os._exit(1)


def serve(listener: socket.socket, files: dict[str, int], template: Path | None,
          served: list[int]) -> None:
    """Keep SPARES spares waiting on the socket until the code on disk changes or the process
    is stopped; `served` counts the calls taken.

    A spare that took a call is replaced once its command has finished (or has run for
    REPLACE_AFTER): the new spare's warm-up then never takes CPU from the command the VA waits
    for, and the other spare is there for a call that comes meanwhile."""
    notes_r, notes_w = os.pipe()
    spares: set[int] = set()
    taken: dict[int, float] = {}  # children running a command: when they took it
    failed = 0
    try:
        while True:
            now = time.monotonic()
            running = sum(1 for at in taken.values() if now - at < REPLACE_AFTER)
            while len(spares) + running < SPARES:
                # SIGTERM waits while forking: its handler's SystemExit, raised inside fork's
                # own callbacks (logging's lock release), would be swallowed there and the
                # process would serve on. The spare takes SIGTERM's default, then unblocks it.
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
                pid = os.fork()
                if pid == 0:
                    os.close(notes_r)
                    spare(listener, notes_w, files, template)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
                spares.add(pid)
            ready, _, _ = select.select([notes_r], [], [], 0.02 if taken else 1.0)
            if ready:
                data = os.read(notes_r, NOTE.size * 64)
                for offset in range(0, len(data) - len(data) % NOTE.size, NOTE.size):
                    what, pid = NOTE.unpack_from(data, offset)
                    spares.discard(pid)
                    if what == b"S":
                        print("handoff warm CLI: code changed on disk; exiting",
                              file=sys.stderr, flush=True)
                        return
                    taken[pid] = time.monotonic()
                    served[0] += 1
                    failed = 0
            for pid in reap():
                taken.pop(pid, None)
                if pid in spares:  # died before taking a call
                    spares.discard(pid)
                    failed += 1
                    if failed >= 3:
                        print("handoff warm CLI: spares keep dying; exiting", file=sys.stderr,
                              flush=True)
                        return
    finally:
        stop(spares)
        os.close(notes_r)
        os.close(notes_w)


def reap() -> list[int]:
    """Collect finished children; their pids."""
    done: list[int] = []
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return done
        if pid == 0:
            return done
        done.append(pid)


def stop(spares: set[int]) -> None:
    """End the waiting spares (they hold the socket: a new warm process could not bind it)."""
    for pid in spares:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for pid in spares:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def main() -> int:
    """Import everything, make the scratch database, listen, serve; Ctrl-C or SIGTERM stops it."""
    if not sys.platform.startswith("linux"):
        print("the warm CLI process needs Linux (abstract sockets, SO_PEERCRED)",
              file=sys.stderr)
        return 2
    files = preimport()  # callers meanwhile run their commands themselves
    with tempfile.TemporaryDirectory(prefix="handoff-warm-") as directory:
        template = make_scratch(Path(directory))
        gc.collect()
        gc.freeze()  # what is imported stays out of the children's collections (and pages)
        try:
            listener = listen()
        except OSError:
            print("handoff warm CLI: another one already serves this checkout", file=sys.stderr)
            return 0
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print(f"handoff warm CLI: ready ({len(files)} modules, pid {os.getpid()})", flush=True)
        served = [0]
        try:
            serve(listener, files, template, served)
        except (KeyboardInterrupt, SystemExit):
            pass
        finally:
            listener.close()
            print(f"handoff warm CLI: stopped after {served[0]} commands", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

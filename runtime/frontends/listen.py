"""Listening addresses checked before grpc binds them (grpc only logs why a bind failed):
a TCP port already in use, and owning a Unix socket path.

Unix sockets: one server per path, and a server removes only its own socket.

grpc binds a Unix socket by unlinking whatever is at the path first, and unlinks the path again
when it shuts down. Bound straight to the user's path, a second server would silently take the
socket over from a live one, and the first one's exit would then delete the second's socket. So:

  1. `prepare()`: a live server answering at the path (a connect succeeds) is refused with a
     clear error; anything at the path that is not a socket too. grpc binds a private name in the
     same directory (`.NAME.PID~`), never the user's path.
  2. `publish()`, once grpc listens: the socket gets the user's name with link(2), which fails
     when the name exists, so two servers starting at once cannot both win; a dead server's
     socket left behind (connect refused) is replaced. The private name is unlinked and the
     (device, inode) of the published socket is remembered.
  3. `release()`, on exit: the path is unlinked only if it is still that inode.
"""
from __future__ import annotations

import os
import socket
import stat
from pathlib import Path


class SocketInUse(ValueError):
    """A live server already answers at the path, or the path is not a socket."""


def socket_is_live(path: str | Path, timeout_s: float = 2.0) -> bool:
    """True if a server accepts connections on the Unix socket `path`; False when nothing is
    there or the socket is stale (connection refused: its server is gone)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            return False
        except socket.timeout:
            return True          # a backlog that is full still means someone listens
        except OSError as e:
            raise SocketInUse(f"unix:{path}: cannot check the socket: {e.strerror}") from None
        return True


def check_tcp_free(host: str, port: int) -> None:
    """OSError naming the address when HOST:PORT cannot be bound (in use, not this host's).
    Port 0 (any free port) is always free. Binds as grpc does (SO_REUSEADDR), then closes."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise OSError(f"--listen {host}:{port}: cannot resolve {host!r} ({e.strerror})") from None
    for family, kind, proto, _name, addr in infos:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(addr)
                return
            except OSError as e:
                error = e
    raise OSError(f"--listen {host}:{port}: cannot listen there: {error.strerror}")


def private_bind_path(path: Path) -> Path:
    """The name grpc binds before the socket is published under `path`."""
    return path.with_name(f".{path.name}.{os.getpid()}~")


class SocketClaim:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.bind_path = private_bind_path(self.path)
        self._identity: tuple[int, int] | None = None

    def prepare(self) -> Path:
        """Refuse a path a live server holds (or that is not a socket); -> the path to bind."""
        self._check_free()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.bind_path.exists() or self.bind_path.is_symlink():
            self.bind_path.unlink()            # ours (same pid) from an earlier failed start
        return self.bind_path

    def publish(self) -> None:
        """Give the bound socket the user's name (exclusively); see the module docstring."""
        for _ in range(2):
            try:
                os.link(self.bind_path, self.path)
                break
            except FileExistsError:
                self._check_free()             # raises if a live server won the race
                self.path.unlink(missing_ok=True)
        else:
            raise SocketInUse(f"unix:{self.path}: another server keeps taking this path")
        st = self.path.stat()
        self._identity = (st.st_dev, st.st_ino)
        self.bind_path.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the published socket if the path still names it; idempotent."""
        self.bind_path.unlink(missing_ok=True)
        if self._identity is None:
            return
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return
        if (st.st_dev, st.st_ino) == self._identity:
            self.path.unlink(missing_ok=True)
        self._identity = None

    def _check_free(self) -> None:
        p = self.path
        if not (p.exists() or p.is_symlink()):
            return
        if not stat.S_ISSOCK(p.lstat().st_mode):
            raise SocketInUse(f"--listen unix:{p}: exists and is not a socket")
        if socket_is_live(p):
            raise SocketInUse(f"--listen unix:{p}: a server is already listening there; stop it "
                              f"or choose another path")

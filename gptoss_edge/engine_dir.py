"""Engine directories: written atomically, described by manifest.json, verified on load.

An engine directory holds the files one target needs (ONNX + external weights, a TensorRT
plan, ...) and `manifest.json`:

    {
      "format": "gptoss-edge-engine",
      "schema_version": 2,
      "created_by": "gptoss-edge 0.1.0",
      "target": "onnxruntime",                      # or "tensorrt", ...
      "opset": {"domain": "gptoss_edge", "version": 1},
      "model_config": {...},                        # ModelConfig.to_dict()
      "tokenizer": {...},                           # runtime.tokenizer spec, e.g. {"kind": "o200k_harmony"}
      "bindings": {"inputs": [...], "outputs": [...]},
      "target_config": {...},                       # free-form, owned by the target
      "files": {"model.onnx": {"size": 123, "sha256": "..."}, ...}
    }

Writing (`EngineDirWriter`): every file goes into a temporary directory beside the target
(same filesystem, so renames are atomic). `finish()` hashes and fsyncs every file, writes and
fsyncs the manifest, then puts the directory in place: on Linux with one atomic exchange
(renameat2 RENAME_EXCHANGE), elsewhere by renaming the old directory aside first. An exception
or a kill before that point leaves the target untouched; no reader ever sees a half-written
engine. SIGTERM and SIGINT while the block runs end it like an exception (SystemExit 143,
KeyboardInterrupt), so the temporary directory is removed at once; the swap itself and the
clean-up hold both signals back until they are done. Only SIGKILL (or a crash) leaves a
`.NAME.tmp-PID-*` folder, removed by the next writer of that target.

Loading (`load_manifest`): refuses an unknown schema or op-set version, a missing, extra,
truncated, grown or (in full mode) altered file, each with an EngineDirError naming the file.
Verification modes:
  * "full" (the default, also `verify=True`): size and streamed sha256 of every file. This is the
    contract of the serving runtime ("verified against the manifest hashes on load"): it also
    catches bit rot and in-place tampering that keeps the size. Cost: one sequential read of the
    engine at sha256 speed (0.3 GB/s measured on a loaded 2-core CI box, 1-2 GB/s on one core
    with SHA extensions): 10-45 s for a 13 GB engine; the pages it reads are the ones the
    runtime maps next anyway.
  * "sizes": sizes and the exact file set only (milliseconds). Enough to catch a truncated copy
    or an interrupted rsync; for restarts of an engine already verified once.
  * "none" (`verify=False`): parse and check the manifest only.
Memory: hashing streams in 8 MiB chunks; peak memory does not depend on the file size.
"""
from __future__ import annotations

import ctypes
import dataclasses
import hashlib
import json
import os
import shutil
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping

from gptoss_edge.compiler.config import ConfigError, ModelConfig
from gptoss_edge.compiler.opset import DOMAIN, OPSET_VERSION

MANIFEST_NAME = "manifest.json"
FORMAT = "gptoss-edge-engine"
SCHEMA_VERSION = 2             # 2: logits_index input (logits for chosen step positions only)
VERIFY_MODES = ("full", "sizes", "none")
CHUNK = 8 << 20                 # bytes per read while hashing
PROGRESS_MIN_BYTES = 256 << 20  # files at least this big report hashing progress

# progress(file_name, bytes_done, bytes_total); called repeatedly while a big file is hashed.
Progress = Callable[[str, int, int], None]


class EngineDirError(RuntimeError):
    """An engine directory that must not be used; the message names the file."""


@dataclasses.dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class EngineManifest:
    path: Path                      # the engine directory
    schema_version: int
    created_by: str
    target: str
    opset_version: int
    config: ModelConfig
    tokenizer: Mapping[str, Any]
    bindings: Mapping[str, Any]
    target_config: Mapping[str, Any]
    files: Mapping[str, FileEntry]

    def file(self, name: str) -> Path:
        """Absolute path of a file listed in the manifest (KeyError-free: raises EngineDirError)."""
        if name not in self.files:
            raise EngineDirError(f"{self.path / name}: not listed in {MANIFEST_NAME}")
        return self.path / name


# ---- hashing ---------------------------------------------------------------------------------

def stderr_progress(name: str, done: int, total: int) -> None:
    """Default progress for big files: one updating line on a terminal, 25% steps otherwise."""
    pct = 100 * done // max(total, 1)
    if sys.stderr.isatty():
        end = "\n" if done >= total else ""
        print(f"\r  hashing {name}: {done >> 20}/{total >> 20} MiB ({pct}%)", end=end,
              file=sys.stderr, flush=True)
    elif done >= total or (done // CHUNK) % max(1, (total // CHUNK) // 4) == 0:
        print(f"  hashing {name}: {pct}%", file=sys.stderr, flush=True)


def hash_file(path: Path, *, name: str = "", progress: Progress | None = stderr_progress,
              fsync: bool = False) -> FileEntry:
    """Streamed sha256 + size of one file (8 MiB chunks); optionally fsync it in the same pass."""
    digest = hashlib.sha256()
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    total = path.stat().st_size
    report = progress if (progress is not None and total >= PROGRESS_MIN_BYTES) else None
    done = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            digest.update(view[:n])
            done += n
            if report is not None:
                report(name or path.name, done, total)
        if fsync:
            os.fsync(f.fileno())
    return FileEntry(size=done, sha256=digest.hexdigest())


def list_files(root: Path) -> list[str]:
    """Relative POSIX names of every entry below root except the manifest, sorted.
    Anything that is not a regular file or directory (symlink, socket, ...) is an error."""
    names: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for entry in dirnames + filenames:
            p = Path(dirpath) / entry
            if p.is_symlink() or not (p.is_file() or p.is_dir()):
                raise EngineDirError(f"{p}: not a regular file (symlinks and special files are refused)")
        for fname in filenames:
            rel = (Path(dirpath) / fname).relative_to(root).as_posix()
            if rel != MANIFEST_NAME:
                names.append(rel)
    return sorted(names)


# ---- writing ---------------------------------------------------------------------------------

def _check_name(name: str) -> str:
    p = Path(name)
    if not name or p.is_absolute() or ".." in p.parts or p.as_posix() != name.replace("\\", "/"):
        raise EngineDirError(f"{name!r}: engine file names must be relative paths without '..'")
    if name == MANIFEST_NAME:
        raise EngineDirError(f"{name!r} is reserved for the manifest")
    return p.as_posix()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing directories (Linux renameat2 RENAME_EXCHANGE).
    Returns False where the system cannot (then the caller falls back to two renames)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    rc = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return rc == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(target: Path) -> None:
    """Remove temp dirs left beside `target` by writers that were killed (their pid is gone)."""
    for p in target.parent.glob(f".{target.name}.*-*-*"):
        kind_pid = p.name[len(target.name) + 2:].split("-")
        if len(kind_pid) >= 2 and kind_pid[0] in ("tmp", "old") and kind_pid[1].isdigit():
            if not _pid_alive(int(kind_pid[1])):
                shutil.rmtree(p, ignore_errors=True)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _raise_terminated(signum, _frame):
    raise SystemExit(128 + signum)


class _DeferSignals:
    """Hold SIGTERM/SIGINT back (pending, delivered on exit) for a step that must not be cut in
    half. A no-op off the main thread, where Python runs no signal handlers anyway."""

    def __enter__(self):
        self._on = threading.current_thread() is threading.main_thread()
        if self._on:
            signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)

    def __exit__(self, *exc):
        if self._on:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class EngineDirWriter:
    """Context manager that builds an engine directory and puts it in place atomically.

        with EngineDirWriter(out_dir) as w:
            write_onnx(w.path("model.onnx"))
            w.finish({"target": "onnxruntime", "model_config": cfg, "tokenizer": {...},
                      "bindings": {"inputs": [...], "outputs": [...]}, "target_config": {...}})

    Leaving the block without finish() (or with an exception) discards everything written and
    leaves an existing `out_dir` as it was. `overwrite=False` refuses an existing out_dir.
    """

    def __init__(self, out_dir: str | Path, *, overwrite: bool = True,
                 progress: Progress | None = stderr_progress):
        self.target = Path(out_dir).absolute()
        self.overwrite = overwrite
        self.progress = progress
        self.tmp: Path | None = None
        self.manifest: EngineManifest | None = None
        self._saved_sigterm = None

    def __enter__(self) -> "EngineDirWriter":
        if self.target.exists() and not self.target.is_dir():
            raise EngineDirError(f"{self.target}: exists and is not a directory")
        if self.target.exists() and not self.overwrite:
            raise EngineDirError(f"{self.target}: exists (pass overwrite=True to replace it)")
        self.target.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temps(self.target)
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            # SIGTERM's default kills without clean-up; SIGINT already raises KeyboardInterrupt.
            # Installed before the folder exists, so no signal can find one without a handler.
            self._saved_sigterm = signal.signal(signal.SIGTERM, _raise_terminated)
        self.tmp = self.target.parent / f".{self.target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            self.tmp.mkdir()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        with _DeferSignals():
            if self.tmp is not None and self.tmp.exists():
                shutil.rmtree(self.tmp, ignore_errors=True)
            self.tmp = None
            if self._saved_sigterm is not None:
                signal.signal(signal.SIGTERM, self._saved_sigterm)
                self._saved_sigterm = None

    def path(self, name: str) -> Path:
        """Where to write engine file `name` (relative, may contain '/'); parents are created."""
        if self.tmp is None:
            raise EngineDirError("EngineDirWriter.path() outside its `with` block or after finish()")
        p = self.tmp / _check_name(name)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def finish(self, fields: Mapping[str, Any]) -> EngineManifest:
        """Hash + fsync every file, write manifest.json, swap the directory into place."""
        if self.tmp is None:
            raise EngineDirError("EngineDirWriter.finish() outside its `with` block or called twice")
        names = list_files(self.tmp)
        if not names:
            raise EngineDirError(f"{self.target}: no engine files were written")
        files = {n: hash_file(self.tmp / n, name=n, progress=self.progress, fsync=True) for n in names}
        doc = manifest_document(fields, files)
        mpath = self.tmp / MANIFEST_NAME
        with open(mpath, "w") as f:
            json.dump(doc, f, indent=2, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        for d in sorted({(self.tmp / n).parent for n in names} | {self.tmp}, reverse=True):
            _fsync_dir(d)
        with _DeferSignals():           # never stop between moving the old engine and the new
            self._put_in_place()
            self.tmp = None
        self.manifest = parse_manifest(self.target, doc)
        return self.manifest

    def _put_in_place(self) -> None:
        assert self.tmp is not None
        if not self.target.exists():
            os.rename(self.tmp, self.target)
        elif _exchange(self.tmp, self.target):
            shutil.rmtree(self.tmp)   # now holds the old engine
        else:
            old = self.target.parent / f".{self.target.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            os.rename(self.target, old)
            os.rename(self.tmp, self.target)
            shutil.rmtree(old)
        _fsync_dir(self.target.parent)


def manifest_document(fields: Mapping[str, Any], files: Mapping[str, FileEntry]) -> dict[str, Any]:
    """The manifest.json object from the caller's fields and the hashed files."""
    required = ("target", "model_config", "tokenizer", "bindings")
    allowed = set(required) | {"target_config"}
    for key in required:
        if key not in fields:
            raise EngineDirError(f"manifest field {key!r} is required")
    for key in fields:
        if key not in allowed:
            raise EngineDirError(f"unknown manifest field {key!r}; allowed: {sorted(allowed)}")
    cfg = fields["model_config"]
    cfg_dict = cfg.to_dict() if isinstance(cfg, ModelConfig) else ModelConfig.from_dict(cfg).to_dict()
    from gptoss_edge import __version__ as version
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "created_by": f"gptoss-edge {version}",
        "target": str(fields["target"]),
        "opset": {"domain": DOMAIN, "version": OPSET_VERSION},
        "model_config": cfg_dict,
        "tokenizer": dict(fields["tokenizer"]),
        "bindings": dict(fields["bindings"]),
        "target_config": dict(fields.get("target_config") or {}),
        "files": {n: {"size": e.size, "sha256": e.sha256} for n, e in sorted(files.items())},
    }


def add_files(engine_dir: str | Path, new_files: Mapping[str, Path], target_config: Mapping[str, Any],
              progress: Progress | None = stderr_progress) -> EngineManifest:
    """Put finished files (written beside the engine dir, same filesystem) into an existing engine
    dir and rewrite its manifest with their hashes and a new target_config (build-engine: the plan
    and its timing cache). Each file and the manifest are renamed into place atomically; a crash
    between those renames leaves a file the manifest does not list (or lists with another hash),
    which load_manifest refuses until the step is run again: a half-finished update is never served."""
    m = load_manifest(engine_dir, verify="none", progress=progress)
    doc = json.loads((m.path / MANIFEST_NAME).read_text())
    files = dict(m.files)
    for name, src in new_files.items():
        files[_check_name(name)] = hash_file(Path(src), name=name, progress=progress, fsync=True)
    fields = {k: doc[k] for k in ("target", "model_config", "tokenizer", "bindings")}
    new_doc = manifest_document({**fields, "target_config": target_config}, files)
    tmp = m.path.parent / f".{m.path.name}.manifest.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(new_doc, f, indent=2, sort_keys=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    for name, src in new_files.items():
        os.replace(src, m.path / name)
    os.replace(tmp, m.path / MANIFEST_NAME)
    _fsync_dir(m.path)
    return parse_manifest(m.path, new_doc)


# ---- loading ---------------------------------------------------------------------------------

def _field(doc: Mapping[str, Any], key: str, kind: type, where: Path) -> Any:
    if key not in doc:
        raise EngineDirError(f"{where}: missing field {key!r}")
    value = doc[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise EngineDirError(f"{where}: field {key!r} must be {kind.__name__}, got {value!r}")
    return value


def parse_manifest(engine_dir: Path, doc: Any) -> EngineManifest:
    """Check a manifest object's schema and versions (no file access)."""
    where = engine_dir / MANIFEST_NAME
    if not isinstance(doc, dict):
        raise EngineDirError(f"{where}: top level must be a JSON object")
    if doc.get("format") != FORMAT:
        raise EngineDirError(f"{where}: not a gptoss-edge engine manifest (format {doc.get('format')!r})")
    schema = _field(doc, "schema_version", int, where)
    if schema != SCHEMA_VERSION:
        raise EngineDirError(f"{where}: schema_version {schema} is not supported by this "
                             f"gptoss-edge (knows {SCHEMA_VERSION}); recompile the engine")
    opset = _field(doc, "opset", dict, where)
    if opset.get("domain") != DOMAIN or opset.get("version") != OPSET_VERSION:
        raise EngineDirError(f"{where}: op set {opset!r} does not match this gptoss-edge "
                             f"({DOMAIN} v{OPSET_VERSION}); recompile the engine")
    try:
        config = ModelConfig.from_dict(_field(doc, "model_config", dict, where))
    except (ConfigError, TypeError) as e:
        raise EngineDirError(f"{where}: model_config: {e}") from None
    files: dict[str, FileEntry] = {}
    for name, entry in _field(doc, "files", dict, where).items():
        ok = (isinstance(entry, dict) and isinstance(entry.get("size"), int) and entry["size"] >= 0
              and isinstance(entry.get("sha256"), str) and len(entry["sha256"]) == 64)
        if not ok:
            raise EngineDirError(f"{where}: bad entry for file {name!r}: {entry!r}")
        try:
            _check_name(name)
        except EngineDirError as e:
            raise EngineDirError(f"{where}: {e}") from None
        files[name] = FileEntry(size=entry["size"], sha256=entry["sha256"])
    return EngineManifest(
        path=engine_dir, schema_version=schema,
        created_by=str(doc.get("created_by", "")),
        target=_field(doc, "target", str, where), opset_version=opset["version"], config=config,
        tokenizer=_field(doc, "tokenizer", dict, where), bindings=_field(doc, "bindings", dict, where),
        target_config=_field(doc, "target_config", dict, where), files=files)


def verify_files(m: EngineManifest, mode: str = "full",
                 progress: Progress | None = stderr_progress) -> None:
    """Check the directory's files against the manifest: exact file set, sizes, and in "full"
    mode the sha256 of each file. Raises EngineDirError naming the first bad file."""
    if mode not in VERIFY_MODES:
        raise ValueError(f"verify mode must be one of {VERIFY_MODES}, got {mode!r}")
    if mode == "none":
        return
    present = set(list_files(m.path))
    for name in sorted(set(m.files) - present):
        raise EngineDirError(f"{m.path / name}: listed in {MANIFEST_NAME} but missing")
    for name in sorted(present - set(m.files)):
        raise EngineDirError(f"{m.path / name}: not listed in {MANIFEST_NAME} (unexpected file)")
    for name, want in m.files.items():
        size = (m.path / name).stat().st_size
        if size != want.size:
            how = "truncated" if size < want.size else "grown"
            raise EngineDirError(f"{m.path / name}: {how}: {size} bytes, manifest says {want.size}")
    if mode == "full":
        for name, want in m.files.items():
            got = hash_file(m.path / name, name=name, progress=progress)
            if got.sha256 != want.sha256:
                raise EngineDirError(f"{m.path / name}: sha256 {got.sha256} does not match the "
                                     f"manifest ({want.sha256}); the file was altered")


def load_manifest(engine_dir: str | Path, verify: bool | str = True,
                  progress: Progress | None = stderr_progress) -> EngineManifest:
    """Read and check `engine_dir/manifest.json`, then verify the files.

    verify: True or "full" (default: sizes + sha256), "sizes", False or "none" (see module doc).
    """
    mode = ("full" if verify else "none") if isinstance(verify, bool) else verify
    root = Path(engine_dir).absolute()
    where = root / MANIFEST_NAME
    if not root.is_dir():
        raise EngineDirError(f"{root}: no such engine directory")
    try:
        doc = json.loads(where.read_text())
    except FileNotFoundError:
        raise EngineDirError(f"{where}: missing (not an engine directory, or an unfinished "
                             "compile)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EngineDirError(f"{where}: not valid JSON ({e})") from None
    m = parse_manifest(root, doc)
    t0 = time.monotonic()
    verify_files(m, mode, progress)
    if progress is not None and time.monotonic() - t0 > 5:
        print(f"  verified {len(m.files)} engine files in {time.monotonic() - t0:.1f} s",
              file=sys.stderr)
    return m

"""Paths and URIs: one way to read and write local files and object-store objects.

A *location* is a local path (``str`` or ``os.PathLike``; ``file://`` URIs count as local) or
a URI such as ``s3://bucket/key``, ``gs://bucket/key`` or ``abfs://...``. URIs resolve to a
``pyarrow.fs.FileSystem`` through ``pyarrow.fs.FileSystem.from_uri`` (fsspec where pyarrow
has no filesystem for the scheme), so credentials and endpoints come from each store's
standard environment; for S3 that is ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_DEFAULT_REGION`` (or ``AWS_REGION``) and ``AWS_ENDPOINT_URL`` (S3-compatible servers).

Local locations stay :class:`pathlib.Path` through :func:`join`, URIs stay ``str``, so local
code paths behave as before. Writes are whole-object: on local disk a temporary file in the
same directory, fsync, then rename (a reader never sees a partial file); on an object store
one upload under the final name, which the store makes visible only once complete (object
stores have no atomic rename). Reads retry transient failures with exponential backoff; a
missing object raises ``FileNotFoundError`` naming the location at once.
"""

from __future__ import annotations

import concurrent.futures
import fnmatch
import functools
import logging
import os
import re
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

Location = str | os.PathLike
T = TypeVar("T")

log = logging.getLogger("salbench")

_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_GLOB_CHARS = frozenset("*?[")
#: Attempts of one read or write against an object store, and the first backoff (doubling).
RETRY_ATTEMPTS = 5
RETRY_BASE_SECONDS = 0.2
#: Threads that fetch many small objects (markers, footers) at once from an object store.
LIST_THREADS = 16


def is_uri(loc: Location) -> bool:
    """True for a non-local URI (``s3://``, ``gs://``, ...); ``file://`` and paths are local."""
    return isinstance(loc, str) and bool(_URI_RE.match(loc)) and not loc.startswith("file://")


def normalize(loc: Location) -> str | Path:
    """A URI without trailing ``/`` (``str``), or a local ``Path`` with ``~`` expanded."""
    if is_uri(loc):
        text = str(loc)
        head, sep, tail = text.partition("://")
        return f"{head}{sep}{tail.rstrip('/')}"
    text = os.fspath(loc)
    if isinstance(text, str) and text.startswith("file://"):
        text = urllib.parse.unquote(urllib.parse.urlparse(text).path)
    return Path(text).expanduser()


def join(loc: Location, *parts: str) -> str | Path:
    """``loc / part / ...``: a ``Path`` for a local ``loc``, a URI ``str`` for a URI."""
    base = normalize(loc)
    if isinstance(base, Path):
        return base.joinpath(*parts)
    return "/".join([base, *(p.strip("/") for p in parts)])


def basename(loc: Location) -> str:
    """The last component of a path or URI."""
    base = normalize(loc)
    return base.name if isinstance(base, Path) else base.rsplit("/", 1)[-1]


def parent(loc: Location) -> str | Path:
    """The location one level up."""
    base = normalize(loc)
    return base.parent if isinstance(base, Path) else base.rsplit("/", 1)[0]


def display(loc: Location) -> str:
    """The location as users wrote it (a URI or a path), for messages."""
    return str(normalize(loc))


def _s3_endpoint() -> dict[str, str]:
    """``endpoint_override`` / ``scheme`` from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``.

    Passed explicitly so that S3-compatible servers work with every supported pyarrow,
    whether or not its AWS SDK reads the variable itself.
    """
    url = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not url:
        return {}
    parsed = urllib.parse.urlparse(url if "://" in url else f"https://{url}")
    return {"endpoint_override": parsed.netloc + parsed.path.rstrip("/"),
            "scheme": parsed.scheme or "https"}


@functools.lru_cache(maxsize=64)
def _filesystem(scheme: str, netloc: str) -> pafs.FileSystem:
    """The filesystem of ``scheme://netloc`` (cached: S3 resolves a bucket's region once)."""
    if scheme in ("s3", "s3a"):
        endpoint = _s3_endpoint()
        region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
        if region is None and not endpoint:
            region = pafs.resolve_s3_region(netloc)
        return pafs.S3FileSystem(
            region=region, connect_timeout=10, request_timeout=60,
            retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=RETRY_ATTEMPTS),
            **endpoint,
        )
    try:
        return pafs.FileSystem.from_uri(f"{scheme}://{netloc}/")[0]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError) as exc:
        try:
            import fsspec
        except ImportError:  # fsspec is optional: pyarrow's schemes need nothing else
            raise ValueError(f"no filesystem for {scheme}:// ({exc}); install fsspec and "
                             f"the package that provides {scheme}://") from exc
        try:
            return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem(scheme)))
        except (ImportError, ValueError) as exc2:
            raise ValueError(f"no filesystem for {scheme}:// ({exc2})") from exc2


def resolve(loc: Location) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path inside it)`` of a location."""
    base = normalize(loc)
    if isinstance(base, Path):
        return pafs.LocalFileSystem(), str(base.absolute())
    parsed = urllib.parse.urlparse(base)
    path = f"{parsed.netloc}{parsed.path}".rstrip("/")
    return _filesystem(parsed.scheme, parsed.netloc), path


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and not isinstance(
        exc, FileNotFoundError | PermissionError | IsADirectoryError | NotADirectoryError)


def retry(fn: Callable[[], T], what: Location, attempts: int = RETRY_ATTEMPTS) -> T:
    """``fn()``, retried with exponential backoff on transient ``OSError``s.

    A missing object or a permission error is not transient: it raises at once, as the
    same exception type with a message that names ``what``.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except OSError as exc:
            if str(exc).startswith(f"{display(what)}: "):  # an inner retry already gave up
                raise
            if attempt == attempts - 1 or not _transient(exc):
                _raise_named(exc, what, attempt + 1)
            delay = RETRY_BASE_SECONDS * 2 ** attempt
            log.warning("%s: %s; retrying in %.1f s", display(what), exc, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


def _raise_named(exc: OSError, what: Location, attempts: int) -> None:
    """Raise ``exc`` again with a message that starts with ``what``."""
    if isinstance(exc, FileNotFoundError | PermissionError):
        kind = "not found" if isinstance(exc, FileNotFoundError) else "permission denied"
        raise type(exc)(f"{display(what)}: {kind} ({exc})") from exc
    raise OSError(f"{display(what)}: {exc} (after {attempts} attempts)") from exc


def info(loc: Location) -> pafs.FileInfo:
    """The store's ``FileInfo`` of a location (type ``NotFound`` when absent)."""
    fs, path = resolve(loc)
    return retry(lambda: fs.get_file_info(path), loc)


def exists(loc: Location) -> bool:
    """True when a file, object or (non-empty, on object stores) directory is there."""
    return info(loc).type != pafs.FileType.NotFound


def is_file(loc: Location) -> bool:
    """True when ``loc`` is a file or object."""
    return info(loc).type == pafs.FileType.File


def is_dir(loc: Location) -> bool:
    """True when ``loc`` is a directory (on object stores: a prefix with objects under it)."""
    return info(loc).type == pafs.FileType.Directory


def size(loc: Location) -> int:
    """Size in bytes of a file or object (-1 when unknown)."""
    s = info(loc).size
    return -1 if s is None else int(s)


def listed_size(root: Location, rel: str, listing: dict[str, int]) -> int:
    """Size in bytes of file ``rel`` under ``root``: from disk for a local root, else from
    the root's listing (``walk_files``); FileNotFoundError when it is not there."""
    if isinstance(root, Path):
        return (root / rel).stat().st_size
    if rel not in listing:
        raise FileNotFoundError(rel)
    return listing[rel]


def makedirs(loc: Location) -> None:
    """Create a local directory with its parents; nothing on object stores (no directories)."""
    base = normalize(loc)
    if isinstance(base, Path):
        base.mkdir(parents=True, exist_ok=True)


def read_bytes(loc: Location) -> bytes:
    """The whole file or object (retried on transient errors)."""
    fs, path = resolve(loc)

    def read() -> bytes:
        with fs.open_input_stream(path) as fh:
            return fh.read()

    return retry(read, loc)


def read_text(loc: Location) -> str:
    """The whole file or object as UTF-8 text."""
    return read_bytes(loc).decode("utf-8")


def open_input_file(loc: Location) -> pa.NativeFile:
    """A random-access reader (for Parquet footers and row groups: only the needed ranges)."""
    fs, path = resolve(loc)
    return retry(lambda: fs.open_input_file(path), loc)


def current_umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_local(path: Path, write: Callable[[str], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 is for the temp name only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write(loc: Location, write_local: Callable[[str], None],
           write_stream: Callable[[Any], None]) -> None:
    base = normalize(loc)
    if isinstance(base, Path):
        _write_local(base, write_local)
        return
    fs, path = resolve(base)

    def upload() -> None:
        with fs.open_output_stream(path) as out:
            write_stream(out)

    retry(upload, base)


def write_bytes(loc: Location, data: bytes) -> None:
    """Write a whole file or object (local: temp + fsync + rename; stores: one upload)."""
    def local(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    _write(loc, local, lambda out: out.write(data))


def write_text(loc: Location, text: str) -> None:
    """Write UTF-8 text as a whole file or object (see :func:`write_bytes`)."""
    write_bytes(loc, text.encode("utf-8"))


def write_parquet(table: pa.Table, loc: Location, **kwargs: Any) -> None:
    """Write a Parquet file or object whole (see :func:`write_bytes`); ``kwargs`` go to
    ``pyarrow.parquet.write_table``."""
    _write(loc, lambda tmp: pq.write_table(table, tmp, **kwargs),
           lambda out: pq.write_table(table, out, **kwargs))


def upload_dir(local: Path, loc: Location) -> None:
    """Copy every file under the local directory ``local`` to ``loc`` (same relative paths)."""
    for f in sorted(local.rglob("*")):
        if f.is_file():
            write_bytes(join(loc, *f.relative_to(local).parts), f.read_bytes())


def delete(loc: Location) -> None:
    """Remove a file or object if it is there."""
    fs, path = resolve(loc)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass


def _relative(root: str, path: str) -> str:
    root, path = root.strip("/"), path.lstrip("/")  # fsspec's memory:// lists "/bucket/..."
    return path[len(root):].lstrip("/") if path.startswith(root) else path


def walk_files(loc: Location, recursive: bool = True) -> dict[str, int]:
    """{path relative to the directory ``loc`` (POSIX): size in bytes} of every file under
    it (only its direct children unless ``recursive``); hidden names (``.x``) left out.

    Raises FileNotFoundError (naming ``loc``) when the directory is not there.
    """
    base = normalize(loc)
    fs, root = resolve(base)
    selector = pafs.FileSelector(root, recursive=recursive)
    out = {}
    for entry in retry(lambda: fs.get_file_info(selector), base):
        if entry.type != pafs.FileType.File:
            continue
        rel = _relative(root, entry.path)
        if not any(part.startswith(".") for part in rel.split("/")):
            out[rel] = -1 if entry.size is None else int(entry.size)
    return out


def list_dir(loc: Location) -> tuple[dict[str, int], list[str]]:
    """({file name: size in bytes}, sorted subdirectory names) directly under ``loc``.

    Raises FileNotFoundError (naming ``loc``) when the directory is not there.
    """
    base = normalize(loc)
    fs, root = resolve(base)
    files, dirs = {}, []
    for entry in retry(lambda: fs.get_file_info(pafs.FileSelector(root)), base):
        name = _relative(root, entry.path)
        if entry.type == pafs.FileType.File:
            files[name] = -1 if entry.size is None else int(entry.size)
        elif entry.type == pafs.FileType.Directory:
            dirs.append(name)
    return files, sorted(dirs)


def list_files(loc: Location, pattern: str = "*", recursive: bool = False) -> list[str | Path]:
    """Files directly under a directory (all levels when ``recursive``) whose path relative
    to it matches ``pattern`` (fnmatch), sorted; hidden names (``.x``) are left out.

    Raises FileNotFoundError (naming ``loc``) when the directory is not there.
    """
    rels = [r for r in walk_files(loc, recursive) if fnmatch.fnmatchcase(r, pattern)]
    return [join(loc, rel) for rel in sorted(rels)]


def has_glob(loc: Location) -> bool:
    """True when a location holds a glob character (``*``, ``?``, ``[``)."""
    return any(c in _GLOB_CHARS for c in str(loc))


def glob(loc: Location) -> list[str | Path]:
    """Files matching a glob pattern (``*`` / ``?`` / ``[...]`` in any component after the
    first wildcard-free ones; ``**`` matches any depth), sorted; ``[]`` when none."""
    text = str(normalize(loc))
    if is_uri(text):
        head, sep, tail = text.partition("://")
        bucket, _, key = tail.partition("/")
        prefix, parts = f"{head}{sep}{bucket}", key.split("/")
    else:
        pure = PurePosixPath(text)
        prefix, parts = pure.anchor or ".", list(pure.parts[1:] if pure.anchor else pure.parts)
    fixed = []
    for part in parts:
        if has_glob(part):
            break
        fixed.append(part)
    rest = parts[len(fixed):]
    base = join(prefix, *fixed) if fixed else normalize(prefix)
    if not rest:
        return [base] if is_file(base) else []
    recursive = len(rest) > 1 or "**" in rest
    pattern = "/".join(rest).replace("**/", "*").replace("**", "*")
    try:
        return list_files(base, pattern, recursive=recursive)
    except FileNotFoundError:  # no directory: nothing matches
        return []


def map_threads(fn: Callable[[Any], T], items: Iterable[Any], remote: bool) -> list[T]:
    """``[fn(x) for x in items]``; on object stores in ``LIST_THREADS`` threads, since each
    call waits on one small request."""
    items = list(items)
    if not remote or len(items) < 2:
        return [fn(x) for x in items]
    with concurrent.futures.ThreadPoolExecutor(min(LIST_THREADS, len(items))) as pool:
        return list(pool.map(fn, items))

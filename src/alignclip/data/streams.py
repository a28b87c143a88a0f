"""Shard URLs: lazy brace expansion with a cap, globs and folders, and byte streams from paths, `pipe:` and http(s).

WebDataset/open_clip conventions: `pipe:COMMAND` streams the command's stdout (`pipe:aws s3 cp s3://b/x.tar -`),
`http(s)://` is fetched with urllib. Stdlib only, so the core install needs no extra package.
"""
from __future__ import annotations

import contextlib
import glob
import itertools
import os
import re
import signal
import subprocess
import urllib.request
from typing import IO, Iterator, Sequence

MAX_SHARDS = 1_000_000  # cap on brace/list expansion: '{0..99999999}' is an error, not a 10^8-string list
HTTP_TIMEOUT = 60.0  # seconds without data before an http(s) shard counts as unreadable
REMOTE_PREFIXES = ("pipe:", "http://", "https://")
_BRACE = re.compile(r"\{([^{}]*)\}")


def iter_braces(pattern: str) -> Iterator[str]:
    """Lazily expand 'a-{000..002}.tar' and '{x,y}' lists (nested, left to right); ranges wider than MAX_SHARDS fail."""
    match = _BRACE.search(pattern)
    if match is None:
        yield pattern
        return
    body, head, tail = match.group(1), pattern[:match.start()], pattern[match.end():]
    range_ = re.fullmatch(r"(-?\d+)\.\.(-?\d+)", body)
    if range_:
        lo, hi = range_.group(1), range_.group(2)
        if abs(int(hi) - int(lo)) >= MAX_SHARDS:
            raise ValueError(f"brace range {{{body}}} names {abs(int(hi) - int(lo)) + 1:,} shards, more than the "
                             f"limit of {MAX_SHARDS:,}; check the pattern")
        width = len(lo) if lo.startswith("0") and len(lo) > 1 else 0
        step = 1 if int(hi) >= int(lo) else -1
        options: Iterator[str] = (str(v).zfill(width) for v in range(int(lo), int(hi) + step, step))
    else:
        options = iter(body.split(","))
    for option in options:
        yield from iter_braces(head + option + tail)


def braceexpand(pattern: str, limit: int = MAX_SHARDS) -> list[str]:
    """'a-{000..002}.tar' -> ['a-000.tar', 'a-001.tar', 'a-002.tar']; more than `limit` names is an error."""
    names = list(itertools.islice(iter_braces(pattern), limit + 1))
    if len(names) > limit:
        raise ValueError(f"{pattern!r} expands to more than {limit:,} shard names; check the pattern")
    return names


def is_remote(url: str) -> bool:
    return url.startswith(REMOTE_PREFIXES)


def expand_urls(urls: str | Sequence[str]) -> list[str]:
    """Patterns/lists -> shard URLs: braces, '::'-separated lists, globs, a directory (all its .tar), pipe:/http(s)."""
    items = urls.split("::") if isinstance(urls, str) else list(urls)
    paths: list[str] = []
    for item in items:
        for path in braceexpand(item if is_remote(item) else os.path.expanduser(item)):
            if is_remote(path):
                paths.append(path)  # never globbed: '?' and '*' belong to the URL or the command
            elif os.path.isdir(path):
                paths += sorted(glob.glob(os.path.join(path, "**", "*.tar"), recursive=True))
            elif any(ch in path for ch in "*?["):
                paths += sorted(glob.glob(path, recursive=True))
            else:
                paths.append(path)
            if len(paths) > MAX_SHARDS:
                raise ValueError(f"{urls!r} names more than {MAX_SHARDS:,} shards; check the pattern")
    return paths


class _Counted:
    """Read-only stream wrapper that counts the bytes read (to tell an intact tar end from a cut stream)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw, self.count, self.eof = raw, 0, False

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        self.eof = self.eof or (not data and size != 0)
        return data

    def drain(self) -> None:
        while self.read(1 << 20):
            pass


@contextlib.contextmanager
def open_stream(url: str) -> Iterator[_Counted]:
    """A local path, `pipe:COMMAND` (its stdout; a non-zero exit is an OSError) or an http(s) URL, as a byte stream."""
    if url.startswith("pipe:"):
        # own session: the whole command tree (shell, aws, curl ...) can be killed at once
        process = subprocess.Popen(url[5:], shell=True, stdout=subprocess.PIPE, start_new_session=True)
        stream = _Counted(process.stdout)  # type: ignore[arg-type]
        failed = OSError(f"command {url[5:]!r} exited with status {{}}")
        try:
            yield stream
            stream.drain()  # let the command finish so its exit status means something
        except BaseException as error:
            if stream.eof:  # its output ended: give it a moment to exit with a status that may explain why
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=5)
            running = process.poll() is None
            if running:
                os.killpg(process.pid, signal.SIGKILL)  # the reader stopped early (islice, Ctrl-C, bad data): do not leave it running
            process.stdout.close()  # type: ignore[union-attr]
            status = process.wait()
            if not running and status != 0 and isinstance(error, Exception):
                raise OSError(str(failed).format(status)) from error  # the command's failure is the cause
            raise
        process.stdout.close()  # type: ignore[union-attr]
        status = process.wait()
        if status != 0:
            raise OSError(str(failed).format(status))
    elif url.startswith(("http://", "https://")):
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
            yield _Counted(response)
    else:
        with open(url, "rb") as handle:
            yield _Counted(handle)

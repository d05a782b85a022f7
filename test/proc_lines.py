"""Readiness lines of a child process, among whatever else its libraries print on the same stream."""
import os
import re
import select
import time


def wait_for_line(stream, want: str) -> list[str]:
    """Read ``stream`` until a line equal to ``want``; return the lines before it. Fast DDS prints its own log
    lines on stdout (e.g. a shared-memory segment refused under a file size limit); those are skipped. Fails,
    showing them, when the stream ends first (the child exited)."""
    before: list[str] = []
    for line in iter(stream.readline, ""):
        if line.strip() == want:
            return before
        before.append(line.rstrip())
    raise AssertionError(f"the child's output ended before {want!r}: {before[-20:]}")


def wait_for_match(stream, pattern: re.Pattern, deadline: float) -> tuple[re.Match, list[str]]:
    """Read the pipe ``stream`` until a line matching ``pattern``, at most ``deadline`` seconds (select on its
    descriptor: a child that hangs without exiting fails the wait, it does not hang the test). Returns the match
    and the lines before it; fails, showing them, when the child's output ends first or the deadline passes."""
    fd, buf, before = stream.fileno(), b"", []
    end = time.monotonic() + deadline
    while True:
        *lines, buf = buf.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace").rstrip()
            if m := pattern.search(line):
                return m, before
            before.append(line)
        left = end - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no line matching {pattern.pattern!r} within {deadline} s: {before[-20:]}")
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"the child's output ended before {pattern.pattern!r}: {before[-20:]}")
            buf += chunk

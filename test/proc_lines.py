"""Readiness lines of a child process, among whatever else its libraries print on the same stream."""


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

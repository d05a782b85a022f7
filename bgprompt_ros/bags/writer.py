"""Bags that survive a full disk: the rosbags ``Writer`` with a space reserve, a free-space check and salvage.

rosbags (like rosbag2) writes ``metadata.yaml``, and for mcap the file's summary and footer, only when the bag is
closed; a write that fails on a full disk used to leave neither, and every reader then refused the whole bag.
``BagWriter`` keeps a bag closable:

- at open it reserves ``RESERVE`` bytes in a file inside the bag directory, freed only to close the bag;
- before each message it checks the free space (``statvfs``): when the message, the chunk rosbags may flush
  with it (mcap chunks of ~1 MiB) and the summary would not fit, it stops BEFORE writing and closes the bag;
- when the file system refuses a write anyway (another process filled the disk, a quota, a file size limit:
  ENOSPC, EDQUOT, EFBIG, EIO, sqlite's SQLITE_FULL / SQLITE_IOERR), it salvages what reached the disk: mcap is cut
  after its last complete record and given a footer (the summary-less form of the MCAP spec, which readers
  scan); sqlite3 keeps what was committed (it commits every ``COMMIT_BYTES``). Then metadata.yaml is written with
  the counts of what was kept. What rosbags held in memory at that moment (up to one ~1 MiB chunk, or the last
  uncommitted ``COMMIT_BYTES``) is lost; the error says how many messages were kept.

Either way ``write`` raises ``DiskFull`` once the bag is closed and readable; the caller stops cleanly.
"""
from __future__ import annotations

import errno
import logging
import mmap
import os
import sqlite3
import struct
from contextlib import suppress
from io import BytesIO
from pathlib import Path

from bgprompt_core.messages.bag_frames import storage_plugin
from bgprompt_core.errors import BgpromptError

log = logging.getLogger("bgprompt.bag")

MiB = 1 << 20
RESERVE = 4 * MiB  # closing needs at most one pending chunk (~1 MiB), the summary and metadata.yaml
HEADROOM = 2 * MiB  # beyond each message: the ~1 MiB chunk rosbags may flush with it, its message index
COMMIT_BYTES = 4 * MiB  # sqlite3: committed this often (and after each connection), so a refused write
# loses at most this much
RESERVE_NAME = ".bgprompt-disk-reserve"
_REFUSED = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO}


class DiskFull(BgpromptError, RuntimeError):
    """The disk (or a quota, or a file size limit) refused the bag; it was closed with what it kept."""

    def __init__(self, message: str, kept: int):
        super().__init__(message)
        self.kept = kept


class BagWriteError(BgpromptError, RuntimeError):
    """A bag that cannot be created where it was asked for (permissions, a read-only file system)."""


def free_bytes(path: str | os.PathLike) -> int:
    """Bytes an unprivileged writer may still use on the file system holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _refused(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in _REFUSED
    if isinstance(exc, sqlite3.OperationalError):  # SQLITE_FULL, SQLITE_IOERR_* (EFBIG and EIO map here)
        name = getattr(exc, "sqlite_errorname", "") or ""
        return name.startswith(("SQLITE_FULL", "SQLITE_IOERR")) or "disk is full" in str(exc)
    return False


def _describe(exc: BaseException) -> str:
    name = getattr(exc, "sqlite_errorname", None)
    return f"{exc} ({name})" if name else str(exc)


def _mib(n: int) -> str:
    return f"{n / MiB:.1f} MiB"


class BagWriter:
    """A new bag at ``path`` (mcap or sqlite3) that a full disk closes instead of destroying; a context manager.

    ``add_connection`` and ``write`` take what rosbags' Writer takes. ``kept`` counts the messages in the bag.
    """

    def __init__(self, path: str | os.PathLike, storage: str = "mcap", reserve: int = RESERVE,
                 headroom: int = HEADROOM):
        from rosbags.rosbag2 import Writer

        self.path, self.storage = Path(path), storage
        self.reserve, self.headroom = reserve, headroom
        self._writer = Writer(self.path, version=9, storage_plugin=storage_plugin(storage))
        self._reserve_path = self.path / RESERVE_NAME
        self.kept = 0
        self.bytes = 0
        self._uncommitted = 0
        self.closed = False
        self.full: str | None = None  # why the bag was closed early

    # -- lifecycle -------------------------------------------------------------------------------------------
    def __enter__(self) -> BagWriter:
        self.open()
        return self

    def __exit__(self, *exc) -> bool:
        self.close()
        return False

    def open(self) -> None:
        """Create the bag and its reserve; DiskFull (and no bag left behind) when there is no room for either."""
        try:
            self._writer.open()
            fd = os.open(self._reserve_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.reserve)
            finally:
                os.close(fd)
        except OSError as exc:
            if exc.errno not in _REFUSED:  # a read-only or forbidden place: nothing was created
                raise BagWriteError(f"{self.path}: a bag cannot be created there: {exc.strerror or exc}") from None
            with suppress(Exception):
                self._writer.abort()
            import shutil

            shutil.rmtree(self.path, ignore_errors=True)  # it holds nothing yet
            self.closed = True
            free = _mib(free_bytes(self.path.parent)) if self.path.parent.exists() else "?"
            raise DiskFull(f"{self.path}: no room to start a bag ({free} free; a bag needs "
                           f"{_mib(self.reserve + self.headroom)} to stay closable on a full disk): nothing was "
                           f"written", 0) from None

    def add_connection(self, topic: str, msgtype: str, **kwargs):
        conn = self._writer.add_connection(topic, msgtype, **kwargs)
        try:
            self._commit()  # sqlite3: the topic and its definition survive a rollback of later messages
        except sqlite3.OperationalError as exc:
            if not _refused(exc):
                raise
            self.full = f"the file system refused a write ({_describe(exc)})"
            self._salvage()
            raise DiskFull(self._stopped(), self.kept) from None
        return conn

    def write(self, connection, timestamp: int, data) -> None:
        """Write one message, or close the bag and raise DiskFull when the disk cannot take it."""
        if self.closed:
            raise DiskFull(f"{self.path}: the bag is closed ({self.full or 'closed'})", self.kept)
        need = len(data) + self.headroom + self.bytes // 500  # summary: ~100 bytes per 1 MiB chunk, generously
        free = free_bytes(self.path)
        if free < need:
            self.full = (f"the disk is full: {_mib(free)} left, less than the {_mib(need)} that the next message and "
                         f"a safe close need")
            self.close()
            raise DiskFull(self._stopped(), self.kept)
        try:
            self._writer.write(connection, timestamp, data)
            if self._uncommitted + len(data) >= COMMIT_BYTES:
                self._commit()
        except (OSError, sqlite3.OperationalError) as exc:
            if not _refused(exc):
                raise
            self.full = f"the file system refused a write ({_describe(exc)})"
            self._salvage()
            raise DiskFull(self._stopped(), self.kept) from None
        self.kept += 1
        self.bytes += len(data)
        self._uncommitted += len(data)

    def close(self) -> None:
        """Close the bag (metadata.yaml, the mcap summary); what a refused write left is salvaged instead."""
        if self.closed:
            return
        self._free_reserve()
        try:
            self._writer.close()
        except (OSError, sqlite3.OperationalError) as exc:
            if not _refused(exc):
                raise
            self.full = self.full or f"the file system refused a write while closing ({_describe(exc)})"
            self._salvage()
            raise DiskFull(self._stopped(), self.kept) from None
        self.closed = True

    # -- internals -------------------------------------------------------------------------------------------
    def _stopped(self) -> str:
        return (f"{self.path}: {self.full}; the bag was closed with the {self.kept} message(s) written before, "
                f"and is readable")

    def _free_reserve(self) -> None:
        with suppress(FileNotFoundError):
            self._reserve_path.unlink()

    def _commit(self) -> None:
        conn = getattr(self._writer.storage, "conn", None)  # rosbags' Sqlite3Writer: one transaction otherwise
        if conn is not None:
            conn.commit()
        self._uncommitted = 0

    def _salvage(self) -> None:
        """Make what reached the disk a closed bag: storage repaired, counts recomputed, metadata.yaml written."""
        self._free_reserve()
        storage, self.closed = self._writer.storage, True
        if storage is None:  # rosbags already dropped it (a failed close): nothing was kept beyond the file
            raise DiskFull(f"{self.path}: {self.full}; the bag could not be closed", 0)
        if hasattr(storage, "conn"):
            with suppress(sqlite3.Error):
                storage.conn.commit()
            rows = storage.conn.execute(
                "SELECT topic_id, COUNT(*), MIN(timestamp), MAX(timestamp) FROM messages GROUP BY topic_id").fetchall()
            stats = {cid: (n, lo, hi) for cid, n, lo, hi in rows}
        else:
            with suppress(OSError):
                storage.bio.close()
            stats = repair_mcap(storage.path, storage.schemas, storage.channels)
        w = self._writer
        w.counts = {c.id: stats.get(c.id, (0, 0, 0))[0] for c in w.connections}
        w.min_timestamp = min((s[1] for s in stats.values()), default=2**63 - 1)
        w.max_timestamp = max((s[2] for s in stats.values()), default=0)
        self.kept = sum(w.counts.values())
        if hasattr(storage, "conn"):
            try:
                w.close()  # the metadata row, commit, metadata.yaml
                return
            except sqlite3.Error:
                with suppress(sqlite3.Error):
                    storage.conn.close()
        w.storage = _Closed(storage.path)  # storage already closed: only metadata.yaml
        w.close()


class _Closed:
    """Stands for a storage that is already closed, so rosbags' Writer.close writes metadata.yaml only."""

    def __init__(self, path: Path):
        self.path = path

    def close(self, version: int, metadata: str) -> None:
        pass


MAGIC = b"\x89MCAP0\r\n"


def _records(buf, start: int, end: int):
    """(opcode, content start, content end) of the complete MCAP records in buf[start:end], in order."""
    pos = start
    while pos + 9 <= end:
        op, size = buf[pos], struct.unpack_from("<Q", buf, pos + 1)[0]
        if pos + 9 + size > end:
            return
        yield op, pos + 9, pos + 9 + size
        pos += 9 + size


def _chunk_messages(buf, lo: int, hi: int) -> list[tuple[int, int]] | None:
    """[(channel id, log time)] of a chunk record's messages, or None when the chunk is not intact."""
    from rosbags.rosbag2.storage_mcap import decompress

    if hi - lo < 40:
        return None
    _, _, size, crc = struct.unpack_from("<QQQI", buf, lo)
    n = struct.unpack_from("<I", buf, lo + 28)[0]
    compression = bytes(buf[lo + 32:lo + 32 + n]).decode(errors="replace")
    at = lo + 32 + n
    if at + 8 > hi:
        return None
    clen = struct.unpack_from("<Q", buf, at)[0]
    if at + 8 + clen != hi:
        return None
    try:
        data = decompress(bytes(buf[at + 8:hi]), compression, size, crc) if compression else buf[at + 8:hi]
    except Exception:
        return None
    if len(data) != size:
        return None
    out, pos = [], 0
    for op, a, b in _records(data, 0, size):
        if op == 0x05:
            cid, _, log_time = struct.unpack_from("<HIQ", data, a)
            out.append((cid, log_time))
        pos = b
    return out if pos == size else None


def repair_mcap(path: Path, schemas, channels) -> dict[int, tuple[int, int, int]]:
    """Cut an unfinished MCAP file after its last intact record and close it with a data end and a footer that
    points to no summary (readers then scan the file, as the MCAP spec allows); the schemas and channels are
    written again first, for a file whose chunk holding them was lost. Returns {channel id: (messages, first log
    time, last log time)} of what was kept. When even that cannot be appended (a file size limit), the last
    chunks are dropped until it fits."""
    from rosbags.rosbag2.storage_mcap import write_channel, write_record, write_schema

    tail = BytesIO()
    for schema in schemas:
        write_schema(tail, schema)
    for channel in channels:
        write_channel(tail, channel, schemas)
    rec = BytesIO()
    rec.write(struct.pack("<I", 0))
    write_record(tail, 0x0F, rec)  # data end, no CRC
    rec = BytesIO()
    rec.write(struct.pack("<QQI", 0, 0, 0))
    write_record(tail, 0x02, rec)  # footer: no summary
    tail.write(MAGIC)
    with open(path, "r+b") as f:
        size = os.fstat(f.fileno()).st_size
        cuts: list[tuple[int, dict]] = []  # (end offset, stats) after each intact record
        stats: dict[int, list[int]] = {}
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else _Empty() as buf:
            if size < 8 or bytes(buf[:8]) != MAGIC:
                raise DiskFull(f"{path}: not an MCAP file; nothing could be kept", 0)
            for op, lo, hi in _records(buf, 8, size):
                if op == 0x06:
                    msgs = _chunk_messages(buf, lo, hi)
                    if msgs is None:
                        break
                    for cid, t in msgs:
                        n, first, last = stats.get(cid, (0, t, t))
                        stats[cid] = [n + 1, min(first, t), max(last, t)]
                elif op not in (0x01, 0x03, 0x04, 0x07):  # header, schema, channel, message index: kept as is
                    break
                cuts.append((hi, {k: tuple(v) for k, v in stats.items()}))
        for end, kept in reversed(cuts):
            try:
                f.truncate(end)
                f.seek(end)
                f.write(tail.getvalue())
                f.flush()
                os.fsync(f.fileno())
                return kept
            except OSError as exc:
                if exc.errno not in _REFUSED:
                    raise
                log.warning("%s: no room to close after %d bytes, dropping the last record", path, end)
    raise DiskFull(f"{path}: not even the MCAP header could be closed", 0)


class _Empty:
    def __enter__(self):
        return b""

    def __exit__(self, *exc):
        return False

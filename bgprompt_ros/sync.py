"""Time synchronization of image, camera_info, mask and sensor depth (message_filters is not installable here).

``exact``: a set is complete when every topic has a message with the same stamp. ``approximate``: the
newest pivot message (the first topic, the image) whose every partner lies within ``slop`` seconds.
Queues are bounded (oldest dropped and counted); stamps may arrive out of order; topics that never
deliver leave the others' queues bounded, never growing.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SyncStats:
    matched: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # per topic: overflowed or superseded


class Synchronizer:
    def __init__(self, topics: list[str], mode: str = "exact", slop: float = 0.05, queue_size: int = 10):
        if mode not in ("exact", "approximate"):
            raise ValueError(f"sync mode must be 'exact' or 'approximate', got {mode!r}")
        if not topics or queue_size < 1 or slop < 0:
            raise ValueError("need topics, queue_size >= 1 and slop >= 0")
        self.topics, self.mode = list(topics), mode
        self.slop_ns = int(slop * 1e9)
        self.queues: dict[str, deque] = {t: deque() for t in topics}
        self.queue_size = queue_size
        self.stats = SyncStats(dropped={t: 0 for t in topics})

    def add(self, topic: str, stamp_ns: int, msg: Any) -> dict[str, Any] | None:
        """Queue a message; return the matched set {topic: msg} when one completes, else None."""
        q = self.queues[topic]
        q.append((stamp_ns, msg))
        if len(q) > self.queue_size:
            # drop the OLDEST stamp (queues are unsorted when stamps arrive out of order)
            oldest = min(range(len(q)), key=lambda i: q[i][0])
            del q[oldest]
            self.stats.dropped[topic] += 1
        match = self._exact() if self.mode == "exact" else self._approximate()
        if match is None:
            return None
        stamps, msgs = match
        for t, s in stamps.items():  # consume the match and everything older: it can only be stale now
            before = len(self.queues[t])
            self.queues[t] = deque(item for item in self.queues[t] if item[0] > s)
            self.stats.dropped[t] += before - len(self.queues[t]) - 1
        self.stats.matched += 1
        return msgs

    def _exact(self):
        common = set.intersection(*({s for s, _ in q} for q in self.queues.values()))
        if not common:
            return None
        s = max(common)
        msgs = {t: next(m for st, m in q if st == s) for t, q in self.queues.items()}
        return {t: s for t in self.topics}, msgs

    def _approximate(self):
        pivot_topic = self.topics[0]
        best = None
        for ps, pmsg in sorted(self.queues[pivot_topic], key=lambda x: -x[0]):
            stamps, msgs = {pivot_topic: ps}, {pivot_topic: pmsg}
            for t in self.topics[1:]:
                if not self.queues[t]:
                    return None
                s, m = min(self.queues[t], key=lambda x: abs(x[0] - ps))
                if abs(s - ps) > self.slop_ns:
                    break
                stamps[t], msgs[t] = s, m
            else:
                best = (stamps, msgs)
                break
        return best

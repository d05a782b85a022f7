"""Time synchronization of image, camera_info, mask and sensor depth, as message_filters does it.

message_filters is not installable here, so its two policies are ported (ROS-free, pure Python):

- ``exact`` (ExactTime): a set is the messages of every topic with the same stamp. A newer message with a
  stamp already queued on its topic replaces the older one (message_filters keeps one message per topic and
  stamp), and when a set is output every older message of every topic is dropped.
- ``approximate`` (ApproximateTime, the C++ policy, message_filters/approximate_time.h): the adaptive
  pivot algorithm. Candidates are built from the heads of the per-topic queues; the topic of a candidate's
  latest message is its pivot; the candidate is output once no better one can come (its start reached
  the pivot, or the optimality bound proves it, with the "virtual" search over empty queues).
  The documented guarantees: every message is used at most once; sets never cross (per topic, the
  messages of a later set are later); a set's span is at most ``slop`` (max_interval_duration); a
  message is only dropped when it can no longer be part of a set (or a queue overflows, counted).
  ``age_penalty`` (0.1 by default, as in message_filters) favours sets that come out earlier. Without a
  lower bound on the time between two messages of a topic (``min_period``, message_filters'
  setInterMessageLowerBound) a set waits for the next message that proves it optimal: one frame of latency.

Messages of one topic that arrive out of order are put back in stamp order when they can still be used,
and dropped (counted) when a later message of that topic is already in a candidate or was output.

Stamps that go back in time (``ros2 bag play --loop``, a camera clock restart, one frame stamped in the
future) would make both policies drop every later message for good. So messages stamped at or before their
topic's last output go to a second, fresh policy instead; the first complete set it forms proves that the
stamps jumped back (stray late messages never pair up across every topic): it becomes the policy, the set is
output, and the jump is counted in ``SyncStats`` (``jumps``, ``last_jump``) for the caller to report.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

NO_PIVOT = -1


@dataclass
class SyncStats:
    matched: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # per topic: overflowed, superseded or too late
    received: dict[str, int] = field(default_factory=dict)  # per topic: every message given to ``add``
    # per topic: stamps whose other inputs arrived while this topic's message never did, dropped unpaired (exact
    # sync, after its first set): frames lost before the synchronizer, or never published on this topic
    unpaired: dict[str, int] = field(default_factory=dict)
    jumps: int = 0  # times the stamps went back in time and the synchronizer started over
    last_jump: tuple[int, int] | None = None  # (newest stamp output before it, the first set's stamp after), ns


class Synchronizer:
    """``add(topic, stamp_ns, msg)`` -> the list of sets ({topic: msg}) that this message completed."""

    def __init__(self, topics: list[str], mode: str = "exact", slop: float = 0.015, queue_size: int = 10,
                 age_penalty: float = 0.1, min_period: float = 0.0):
        if mode not in ("exact", "approximate"):
            raise ValueError(f"sync mode must be 'exact' or 'approximate', got {mode!r}")
        if not topics or len(set(topics)) != len(topics) or queue_size < 1 or slop < 0 or age_penalty < 0 \
                or min_period < 0:
            raise ValueError("need distinct topics, queue_size >= 1, and slop, age_penalty, min_period >= 0")
        self.topics, self.mode = list(topics), mode
        self.slop_ns = int(round(slop * 1e9))
        self.stats = SyncStats(dropped={t: 0 for t in topics}, received={t: 0 for t in topics},
                               unpaired={t: 0 for t in topics})
        lower_bound = int(round(min_period * 1e9))
        self._new_policy = (lambda: ExactTime(len(topics), queue_size)) if mode == "exact" else \
            (lambda: ApproximateTime(len(topics), queue_size, self.slop_ns, age_penalty, lower_bound))
        self._policy = self._new_policy()
        self._after_jump = None  # the fresh policy that late messages go to (see the module docstring)
        self._late = [0] * len(topics)  # per topic: messages given to it since the last regular output
        self._floor: list[int | None] = [None] * len(topics)  # per topic: its stamp in the newest output set

    def add(self, topic: str, stamp_ns: int, msg: Any) -> list[dict[str, Any]]:
        i, stamp = self.topics.index(topic), int(stamp_ns)
        self.stats.received[topic] += 1
        if self._floor[i] is not None and stamp <= self._floor[i]:
            sets = self._add_late(i, stamp, msg)
        else:
            sets = self._policy.add(i, stamp, (stamp, msg))
            if sets:  # regular output: late messages held so far were strays, not a jump
                self._count_dropped(self._late)
                self._after_jump, self._late = None, [0] * len(self.topics)
        self._count_dropped(self._policy.take_dropped())
        for j, n in enumerate(self._policy.take_unpaired()):
            self.stats.unpaired[self.topics[j]] += n
        for s in sets:
            self._floor = [st for st, _ in s]
        self.stats.matched += len(sets)
        return [dict(zip(self.topics, (m for _, m in s))) for s in sets]

    def _add_late(self, i: int, stamp: int, msg: Any) -> list[list]:
        if self._after_jump is None:
            self._after_jump = self._new_policy()
        self._late[i] += 1
        sets = self._after_jump.add(i, stamp, (stamp, msg))
        if not sets:
            return []
        self.stats.jumps += 1
        self.stats.last_jump = (max(f for f in self._floor if f is not None), max(st for st, _ in sets[0]))
        self._count_dropped(self._policy.take_dropped())
        self._count_dropped(self._policy.held())  # messages before the jump that never completed a set
        self._policy, self._after_jump, self._late = self._after_jump, None, [0] * len(self.topics)
        return sets

    def _count_dropped(self, counts: list[int]) -> None:
        for j, n in enumerate(counts):
            self.stats.dropped[self.topics[j]] += n


class ExactTime:
    """message_filters ExactTime: one message per (topic, stamp); a complete stamp is output, older ones dropped."""

    def __init__(self, n: int, queue_size: int):
        self.n, self.queue_size = n, queue_size
        self.tuples: dict[int, list] = {}
        self.last_out: int | None = None
        self._dropped = [0] * n
        self._unpaired = [0] * n

    def take_dropped(self) -> list[int]:
        out, self._dropped = self._dropped, [0] * self.n
        return out

    def take_unpaired(self) -> list[int]:
        """Per topic: stamps dropped without its message while others had theirs, since the last call (rows
        dropped before the first set are start-up, not loss: not counted)."""
        out, self._unpaired = self._unpaired, [0] * self.n
        return out

    def add(self, i: int, stamp: int, msg: Any) -> list[list]:
        if self.last_out is not None and stamp <= self.last_out:
            self._dropped[i] += 1  # a set at this stamp or later was already output
            return []
        row = self.tuples.setdefault(stamp, [None] * self.n)
        if row[i] is not None:
            self._dropped[i] += 1  # replaced by the newer message with the same stamp
        row[i] = (msg,)
        if all(x is not None for x in row):
            out = [x[0] for x in row]
            for s in [s for s in self.tuples if s <= stamp]:  # the set and everything older
                if s != stamp:
                    self._count(self.tuples[s])
                del self.tuples[s]
            self.last_out = stamp
            return [out]
        while len(self.tuples) > self.queue_size:  # the oldest incomplete stamp goes
            oldest = min(self.tuples)
            self._count(self.tuples.pop(oldest))
        return []

    def _count(self, row: list) -> None:
        for j, x in enumerate(row):
            self._dropped[j] += x is not None
            self._unpaired[j] += x is None and self.last_out is not None

    def held(self) -> list[int]:
        """Per topic: messages queued, waiting for their set."""
        return [sum(row[j] is not None for row in self.tuples.values()) for j in range(self.n)]


class ApproximateTime:
    """The ApproximateTime policy of message_filters (C++); ``lower_bound_ns`` is its inter-message lower bound
    (setInterMessageLowerBound, the same for every topic; 0: none, as the default there)."""

    def __init__(self, n: int, queue_size: int, max_interval_ns: int, age_penalty: float = 0.1,
                 lower_bound_ns: int = 0):
        self.n, self.queue_size = n, queue_size
        self.lower_bound = lower_bound_ns
        self.max_interval = max_interval_ns
        self.age_penalty = age_penalty
        self.deques: list[deque] = [deque() for _ in range(n)]  # (stamp, msg), in stamp order
        self.past: list[list] = [[] for _ in range(n)]
        self.has_dropped = [False] * n
        self.candidate: list | None = None
        self.candidate_start = self.candidate_end = 0
        self.pivot, self.pivot_time = NO_PIVOT, 0
        self.floor = [None] * n  # per topic: the newest stamp already used in an output or a candidate
        self._out: list[list] = []
        self._dropped = [0] * n

    def take_dropped(self) -> list[int]:
        out, self._dropped = self._dropped, [0] * self.n
        return out

    def held(self) -> list[int]:
        """Per topic: messages queued, waiting for their set."""
        return [len(q) + len(p) for q, p in zip(self.deques, self.past)]

    def take_unpaired(self) -> list[int]:
        """Not tracked by this policy (a dropped message has no single stamp to miss a partner at): zeros."""
        return [0] * self.n

    # --- input ----------------------------------------------------------------------------------
    def add(self, i: int, stamp: int, msg: Any) -> list[list]:
        self._out = []
        q = self.deques[i]
        newest_held = max([s for s, _ in self.past[i]] + ([self.floor[i]] if self.floor[i] is not None else []),
                          default=None)
        if newest_held is not None and stamp <= newest_held:
            self._dropped[i] += 1  # too late: a later message of this topic is already in a set
            return []
        k = self._slot(q, stamp)
        if (k < len(q) or (k and q[k - 1][0] == stamp)) and self.pivot != NO_PIVOT:
            self._abandon_candidate()  # the heads changed under the candidate: search again
            k = self._slot(q, stamp)
        if k and q[k - 1][0] == stamp:  # one message per topic and stamp, the newest (as ExactTime keeps it)
            q[k - 1] = (stamp, msg)
            self._dropped[i] += 1
        else:
            q.insert(k, (stamp, msg))
        if self._non_empty() == self.n:
            self._process()
        if len(q) + len(self.past[i]) > self.queue_size:
            self._recover_all()  # cancel the ongoing search
            q.popleft()
            self._dropped[i] += 1
            self.has_dropped[i] = True
            if self.pivot != NO_PIVOT:
                self.candidate, self.pivot = None, NO_PIVOT
                self._process()  # there may still be enough messages for a new candidate
        return self._out

    @staticmethod
    def _slot(q: deque, stamp: int) -> int:
        """Where ``stamp`` goes in the stamp-ordered queue ``q``: after every message not later than it."""
        k = len(q)
        while k > 0 and q[k - 1][0] > stamp:  # out of order: back into stamp order
            k -= 1
        return k

    # --- the algorithm (message_filters/approximate_time.h) --------------------------------------
    def _non_empty(self) -> int:
        return sum(1 for q in self.deques if q)

    def _boundary(self, end: bool, virtual: bool = False) -> tuple[int, int]:
        """(index, time) of the latest (end) or earliest head; ties as in the C++ code."""
        times = [self._virtual_time(i) if virtual else self.deques[i][0][0] for i in range(self.n)]
        index, t = 0, times[0]
        for i in range(1, self.n):
            if (times[i] < t) != end:  # C++: if ((t_i < time) ^ end)
                index, t = i, times[i]
        return index, t

    def _virtual_time(self, i: int) -> int:
        q = self.deques[i]
        if q:
            return q[0][0]
        last = self.past[i][-1][0]  # we have a candidate, so an empty deque has moved messages to past
        return max(last + self.lower_bound, self.pivot_time)

    def _make_candidate(self) -> None:
        self.candidate = [q[0] for q in self.deques]
        for i, p in enumerate(self.past):  # older messages can never be in a set now: sets do not cross
            self._dropped[i] += len(p)
            p.clear()

    def _move_front_to_past(self, i: int) -> None:
        self.past[i].append(self.deques[i].popleft())

    def _recover_all(self) -> None:
        for q, p in zip(self.deques, self.past):
            while p:
                q.appendleft(p.pop())

    def _abandon_candidate(self) -> None:
        self._recover_all()
        self.candidate, self.pivot = None, NO_PIVOT

    def _publish_candidate(self) -> None:
        self._out.append([m for _, m in self.candidate])
        for i, (s, _) in enumerate(self.candidate):
            self.floor[i] = s
        self.candidate, self.pivot = None, NO_PIVOT
        self._recover_all()
        for q in self.deques:  # the candidate's messages are the heads again: delete them
            q.popleft()

    def _process(self) -> None:
        while self._non_empty() == self.n:
            end_index, end_time = self._boundary(end=True)
            start_index, start_time = self._boundary(end=False)
            for i in range(self.n):
                if i != end_index:
                    self.has_dropped[i] = False
            if self.pivot == NO_PIVOT:
                if end_time - start_time > self.max_interval or self.has_dropped[end_index]:
                    self._dropped[start_index] += 1  # too wide to be a set, or a bad pivot: move on
                    self.deques[start_index].popleft()
                    continue
                self._make_candidate()
                self.candidate_start, self.candidate_end = start_time, end_time
                self.pivot, self.pivot_time = end_index, end_time
                self._move_front_to_past(start_index)
            else:
                if (end_time - self.candidate_end) * (1 + self.age_penalty) >= start_time - self.candidate_start:
                    self._move_front_to_past(start_index)  # not better
                else:
                    self._make_candidate()  # better: same pivot
                    self.candidate_start, self.candidate_end = start_time, end_time
                    self._move_front_to_past(start_index)
            if start_index == self.pivot:
                self._publish_candidate()  # every candidate for this pivot was seen
            elif (end_time - self.candidate_end) * (1 + self.age_penalty) >= self.pivot_time - self.candidate_start:
                self._publish_candidate()  # provably optimal: any later candidate spans [pivot, end]
            elif self._non_empty() < self.n:
                self._virtual_search()

    def _virtual_search(self) -> None:
        """With some queues empty, try to prove the candidate optimal by assuming the best future messages."""
        moves = [0] * self.n
        while True:
            end_index, end_time = self._boundary(end=True, virtual=True)
            start_index, start_time = self._boundary(end=False, virtual=True)
            if (end_time - self.candidate_end) * (1 + self.age_penalty) >= self.pivot_time - self.candidate_start:
                self._publish_candidate()
                return
            if (end_time - self.candidate_end) * (1 + self.age_penalty) < start_time - self.candidate_start:
                for i, k in enumerate(moves):  # cannot prove it: undo the virtual moves
                    for _ in range(k):
                        self.deques[i].appendleft(self.past[i].pop())
                return
            self._move_front_to_past(start_index)
            moves[start_index] += 1

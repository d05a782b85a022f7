"""Readiness signals between ROS 2 processes: wait for the graph, never sleep.

A subscriber count on a topic is not a readiness signal: a recorder, RViz or a test probe count too.
What these helpers wait for, with a deadline, is a NAMED node:

- it is in the graph;
- if it is a managed (lifecycle) node (it offers ``<node>/get_state``), its state is ``active``;
- for each topic we publish that it subscribes to, our publisher has matched every QoS-compatible
  subscription the graph shows (so reliable messages reach it), and it subscribes to at least one of them;
- likewise for each topic we subscribe to that it publishes.

On time-out :class:`NotReady` names the node and what did not come up.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence

from bgprompt_core.errors import BgpromptError

ACTIVE = "active"


class NotReady(BgpromptError, RuntimeError):
    """A named node did not become ready before the deadline; the message says what is missing."""


def _split(name: str) -> tuple[str, str]:
    """'/ns/node' or 'node' -> (name, namespace or '' for any)."""
    if "/" not in name.strip("/"):
        return name.strip("/"), ""
    ns, _, base = name.rstrip("/").rpartition("/")
    return base, ns or "/"


def _find(node, name: str) -> tuple[str, str] | None:
    base, ns = _split(name)
    for n, n_ns in node.get_node_names_and_namespaces():
        if n == base and (not ns or n_ns == ns):
            return n, n_ns
    return None


def _fqn(name: str, ns: str) -> str:
    return f"{ns.rstrip('/')}/{name}"


def lifecycle_state(node, name: str, ns: str, timeout: float = 2.0) -> str | None:
    """The label of a lifecycle node's current state, or None when it offers no ``get_state`` service."""
    from lifecycle_msgs.srv import GetState
    from rclpy.node import NodeNameNonExistentError

    service = f"{_fqn(name, ns)}/get_state"
    end = time.monotonic() + timeout
    while True:  # the graph may learn a node's name after its first messages arrived: wait for the name
        try:
            offered = {srv for srv, _ in node.get_service_names_and_types_by_node(name, ns)}
            break
        except NodeNameNonExistentError:
            if time.monotonic() >= end:
                return None
            _spin(node, 0.05)
    if service not in offered:
        return None
    client = node.create_client(GetState, service)
    try:
        if not client.wait_for_service(timeout_sec=timeout):
            return "unreachable"
        future = client.call_async(GetState.Request())
        end = time.monotonic() + timeout
        while not future.done() and time.monotonic() < end:
            _spin(node, 0.05)
        return future.result().current_state.label if future.done() and future.result() else "unreachable"
    finally:
        node.destroy_client(client)


def _spin(node, timeout: float) -> None:
    import rclpy

    rclpy.spin_once(node, timeout_sec=timeout)


def _matched(topic: str, ours, count: int, infos) -> str | None:
    """None when ``ours`` (a publisher or subscription) matched every compatible endpoint in ``infos``."""
    from rclpy.qos import QoSCompatibility, qos_check_compatible

    def compatible(info) -> bool:
        pub_qos, sub_qos = (ours.qos_profile, info.qos_profile) if hasattr(ours, "publish") else \
            (info.qos_profile, ours.qos_profile)
        return qos_check_compatible(pub_qos, sub_qos)[0] != QoSCompatibility.ERROR

    expected = sum(1 for info in infos if compatible(info))
    return None if count >= expected else f"{topic}: matched {count} of {expected} endpoints"


def node_not_ready(node, name: str, publishers: Mapping[str, object] | None = None,
                   subscriptions: Mapping[str, object] | None = None) -> str | None:
    """Why the named node is not ready for our ``publishers``/``subscriptions`` ({topic: entity}); None if ready."""
    found = _find(node, name)
    if found is None:
        return "not in the ROS graph"
    base, ns = found
    state = lifecycle_state(node, base, ns)
    if state is not None and state != ACTIVE:
        return f"lifecycle state is {state!r}, not 'active'"
    resolve = node.resolve_topic_name
    for ours, by_node, info_of, count_of, verb in (
            (publishers, node.get_subscriber_names_and_types_by_node, node.get_subscriptions_info_by_topic,
             lambda e: e.get_subscription_count(), "subscribes"),
            (subscriptions, node.get_publisher_names_and_types_by_node, node.get_publishers_info_by_topic,
             lambda e: e.get_publisher_count(), "publishes")):
        if not ours:
            continue
        theirs = {t for t, _ in by_node(base, ns)}
        shared = [t for t in ours if resolve(t) in theirs]
        if not shared:
            return f"{verb} to none of {sorted(resolve(t) for t in ours)} (it {verb} to {sorted(theirs)})"
        for topic in shared:
            reason = _matched(resolve(topic), ours[topic], count_of(ours[topic]), info_of(resolve(topic)))
            if reason:
                return reason
    return None


def wait_for_nodes(node, names: Sequence[str], timeout: float, publishers: Mapping[str, object] | None = None,
                   subscriptions: Mapping[str, object] | None = None,
                   on_wait: Callable[[str, str], None] | None = None) -> None:
    """Spin ``node`` until every node in ``names`` is ready (see the module doc), or raise NotReady."""
    end = time.monotonic() + timeout
    pending = list(names)
    reason = ""
    while pending:
        reason = node_not_ready(node, pending[0], publishers, subscriptions)
        if reason is None:
            pending.pop(0)
            continue
        if on_wait is not None:
            on_wait(pending[0], reason)
        if time.monotonic() >= end:
            raise NotReady(f"node {pending[0]!r} was not ready after {timeout:.0f} s: {reason}")
        _spin(node, 0.1)

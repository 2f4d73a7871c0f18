"""The routing state's Lua scripts on the suite's real Redis: slots, leases, windows, cooldowns, budgets.

The end-to-end tests (tests/remote/test_routing.py) show these hold across worker processes; here each
rule is checked on its own, with short windows.
"""

from __future__ import annotations

import time
import uuid

import pytest

from mediaconduit_worker.worker.keeper import keeper
from mediaconduit_worker.worker.limits import CooldownPolicy, Denied, Lease, Limits, RoutingState


@pytest.fixture
def state() -> RoutingState:
    return RoutingState()


@pytest.fixture
def cid() -> str:
    return uuid.uuid4().hex


def test_concurrency_slots_are_leases_that_lapse_unless_renewed(state, cid):
    limits = Limits(max_concurrency=2, lease_ttl=0.6)
    policy = CooldownPolicy()
    first, second = state.acquire(cid, limits), state.acquire(cid, limits)
    assert isinstance(first, Lease) and isinstance(second, Lease)
    denied = state.acquire(cid, limits)
    assert isinstance(denied, Denied) and denied.reason == "concurrency" and 0 < denied.wait <= 0.6
    assert state.in_flight([cid]) == [2]
    state.release(first, limits, policy, outcome="ok", duration=0.01)
    third = state.acquire(cid, limits)
    assert isinstance(third, Lease)  # the freed slot
    # Held leases are renewed by this process's keeper; one it stops renewing lapses on its own.
    keeper.drop(second.name)
    time.sleep(1.0)
    assert state.in_flight([cid]) == [1]
    state.release(third, limits, policy, outcome="ok", duration=0.01)


def test_rpm_counts_call_starts_in_a_sliding_window(state, cid):
    limits = Limits(rpm=3, window=0.5)
    policy = CooldownPolicy()
    for _ in range(3):
        lease = state.acquire(cid, limits)
        assert isinstance(lease, Lease)
        state.release(lease, limits, policy, outcome="ok", duration=0.001)  # finished calls still count
    denied = state.acquire(cid, limits)
    assert isinstance(denied, Denied) and denied.reason == "rpm" and 0 < denied.wait <= 0.5
    time.sleep(denied.wait + 0.02)
    lease = state.acquire(cid, limits)
    assert isinstance(lease, Lease)
    state.release(lease, limits, policy, outcome="ok", duration=0.001)


def test_tpm_holds_the_estimate_then_counts_the_reported_tokens(state, cid):
    limits = Limits(tpm=20, window=5)
    policy = CooldownPolicy()
    first = state.acquire(cid, limits, est_tokens=10)
    second = state.acquire(cid, limits, est_tokens=10)
    assert isinstance(first, Lease) and isinstance(second, Lease)
    assert isinstance(state.acquire(cid, limits, est_tokens=5), Denied)  # 10 + 10 + 5 > 20
    state.release(first, limits, policy, outcome="ok", duration=0.01, tokens=2)  # it used 2, not 10
    third = state.acquire(cid, limits, est_tokens=5)
    assert isinstance(third, Lease)  # 2 + 10 + 5 <= 20
    for lease in (second, third):
        state.release(lease, limits, policy, outcome="ok", duration=0.01, tokens=5)


def test_cooldown_after_allowed_fails_lasts_the_longer_of_cooldown_and_retry_after(state, cid):
    limits, policy = Limits(), CooldownPolicy(allowed_fails=2, window=10, cooldown=0.3)
    lease = state.acquire(cid, limits)
    assert state.release(lease, limits, policy, outcome="transient", duration=0.01) == 0  # one failure: not yet
    lease = state.acquire(cid, limits)
    assert state.release(lease, limits, policy, outcome="permanent", duration=0.01) == 0  # a 400 does not count
    lease = state.acquire(cid, limits)
    assert state.release(lease, limits, policy, outcome="transient", duration=0.01, retry_after=0.8) == 0.8
    denied = state.acquire(cid, limits)
    assert isinstance(denied, Denied) and denied.reason == "cooldown" and 0.5 < denied.wait <= 0.8
    time.sleep(denied.wait + 0.02)
    lease = state.acquire(cid, limits)
    assert isinstance(lease, Lease)  # back, with its failure count reset
    state.release(lease, limits, policy, outcome="ok", duration=0.01)


def test_budget_holds_refuse_what_does_not_fit_and_settle_to_the_real_cost(state):
    scope = f"batch:{uuid.uuid4().hex}"
    first = state.reserve([(scope, 1.0)], 0.6, hold=60)
    assert isinstance(first, str)
    refused = state.reserve([(scope, 1.0)], 0.6, hold=60)
    assert not isinstance(refused, str) and (refused.scope, refused.spent, refused.held) == (scope, 0.0, 0.6)
    state.settle([(scope, 60)], first, 0.25)
    assert state.spend(scope) == (0.25, 0.0)
    assert isinstance(state.reserve([(scope, 1.0)], 0.6, hold=60), str)  # 0.25 + 0.6 fits
    lapsed = f"batch:{uuid.uuid4().hex}"
    assert isinstance(state.reserve([(lapsed, 1.0)], 0.9, hold=0.2), str)
    time.sleep(0.3)  # the worker holding it died: its hold lapses
    assert isinstance(state.reserve([(lapsed, 1.0)], 0.9, hold=60), str)

"""Polling loops back off while idle (gateway/doorbell.py `IdleWait`): the delivery worker and
the flow runner read every shard on each look, so an idle one looks less and less often, up to
four times its poll interval, and at once again after a wake-up or a look that found work."""

from __future__ import annotations

from gateway.doorbell import IdleWait


def test_each_empty_look_doubles_the_wait_up_to_four_times_the_poll_interval() -> None:
    idle = IdleWait(1.0)
    waits = []
    for _ in range(5):
        waits.append(idle.seconds)
        idle.found(False)
    assert waits == [1.0, 2.0, 4.0, 4.0, 4.0]


def test_work_found_or_a_wake_up_brings_the_wait_back_to_the_poll_interval() -> None:
    idle = IdleWait(0.5)
    idle.found(False)
    idle.found(False)
    backed_off = idle.seconds
    idle.found(True)
    after_work = idle.seconds
    idle.found(False)
    idle.woken()
    assert (backed_off, after_work, idle.seconds) == (2.0, 0.5, 0.5)

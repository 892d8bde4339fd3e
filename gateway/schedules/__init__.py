"""Schedules ("ação GET" on a schedule): partners that do not push are read on an interval or
a cron expression with a persisted cursor, and their pages are written exactly as if they had
been pushed to a trigger.

    service.ScheduleService   admins: create, list, get, change, delete, pause, resume,
                              run now; the runs of a schedule
    runner.ScheduleRunner     the background loop: claim due schedules under a lease, run,
                              record the run, back off after failures
    poll.Poll                 one run: call → read → land → commit, page after page
    calls                     one call's request (cursor placed) and its answer read as a page
    sinks                     where pages land: the trigger ingest path (PageSink, EntitySink)
    spec                      a schedule body checked whole; the API's view
    timing                    intervals, cron expressions with time zones, backoff
"""

from gateway.schedules.runner import RunnerSettings, ScheduleRunner
from gateway.schedules.service import ScheduleService

__all__ = ["RunnerSettings", "ScheduleRunner", "ScheduleService"]

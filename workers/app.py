"""The Celery app `workers.app:app` (`celery -A workers.app worker -Q embed` works).

Configured from indexer.settings.Settings when Celery first needs its configuration, not at
import: `indexer worker` / `indexer beat` build the settings and call `configure`; the plain
`celery -A workers.app ...` command reads them (INDEXER_* environment, .env) lazily.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, bootsteps
from celery.schedules import crontab, schedule
from kombu.entity import Queue

from indexer.distributed import (
    EMBED,
    QUEUES,
    SCAN,
    STORE,
    OrphanSweep,
    redis_client,
    replan_orphans,
)
from indexer.settings import Settings

log = logging.getLogger(__name__)

app = Celery("collap-indexer", include=["workers.tasks"])

ROUTES = {
    "workers.tasks.scan": {"queue": SCAN},
    "workers.tasks.rescan": {"queue": SCAN},
    "workers.tasks.embed": {"queue": EMBED},
    "workers.tasks.plan": {"queue": STORE},
    "workers.tasks.store": {"queue": STORE},
    "workers.tasks.records": {"queue": STORE},
}


def rescan_schedule(settings: Settings) -> Any:
    """`rescan_crontab` ("m h dom mon dow") when set, else every `rescan_interval` seconds."""
    if settings.rescan_crontab:
        fields = settings.rescan_crontab.split()
        if len(fields) != 5:
            raise ValueError(
                f"INDEXER_RESCAN_CRONTAB needs 5 fields (m h dom mon dow), got {fields!r}"
            )
        minute, hour, dom, month, dow = fields
        return crontab(
            minute=minute, hour=hour, day_of_month=dom, month_of_year=month, day_of_week=dow
        )
    return schedule(run_every=settings.rescan_interval)


def celery_config(settings: Settings) -> dict[str, Any]:
    vt = settings.visibility_timeout
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        # JSON only: messages are paths, hashes and lists of floats, never pickles
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # a message is acknowledged when its task is done, so a worker that dies mid-task
        # (SIGKILL, OOM, a lost node) leaves it to be delivered again; tasks are idempotent
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,  # a worker holds one message per process, no more
        "broker_transport_options": {
            # a message taken and not acknowledged goes back after this; > the longest task
            "visibility_timeout": vt,
            # look for such messages every vt/10 s (kombu's default sweep is every 100 s)
            "unacked_restore_interval": max(1, min(10, vt // 10)),
            "unacked_restore_throttle": 1,
            # the sweep's mutex is a Redis key; one left behind by a Redis restart mid-sweep
            # blocks every sweep until it expires (kombu's default: 300 s)
            "unacked_mutex_expire": min(300, max(5, vt // 10)),
        },
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # a restarting Redis is waited for
        # publishing (a stage enqueueing the next) rides out a Redis restart of ~a minute
        "task_publish_retry_policy": {
            "max_retries": 40,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 2,
        },
        "task_queues": tuple(Queue(q, routing_key=q) for q in QUEUES),
        "task_default_queue": SCAN,
        "task_routes": ROUTES,
        "task_ignore_result": True,  # results travel as messages; only status replies are kept
        "result_expires": 3600,
        "timezone": "UTC",
        "beat_schedule": {
            "rescan-catalogs": {
                "task": "workers.tasks.rescan",
                "schedule": rescan_schedule(settings),
            }
        },
    }


class ClaimSweep(bootsteps.StartStopStep):
    """In a worker that takes the store queue: every `claim_sweep_interval` seconds, plan again
    the files of claims whose message was lost (indexer.distributed.OrphanSweep)."""

    requires = ("celery.worker.components:Timer",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.tref: Any = None
        self.sweep: OrphanSweep | None = None

    def start(self, worker: Any) -> None:
        if STORE not in worker.app.amqp.queues.consume_from:
            return
        settings = Settings()
        # a short timeout: the sweep runs in the worker's event loop
        self.sweep = OrphanSweep(settings, redis_client(settings.broker_url, timeout=2.0))
        self.tref = worker.timer.call_repeatedly(settings.claim_sweep_interval, self.tick)

    def tick(self) -> None:
        assert self.sweep is not None
        try:
            replan_orphans(self.sweep, self._send_plan)
        except Exception as err:  # the broker is away: the next sweep tries again
            log.warning("claim sweep: %s", err)

    @staticmethod
    def _send_plan(request: dict[str, Any]) -> None:
        # no publish retries: they would hold the event loop; the claims wait for the next sweep
        app.send_task("workers.tasks.plan", args=[request], retry=False)

    def stop(self, worker: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None


app.steps["worker"].add(ClaimSweep)


def configure(settings: Settings) -> Celery:
    """Configure the app from `settings` (entry points that built their own settings)."""
    app.conf.update(celery_config(settings))
    return app


# read the environment only when Celery first needs its configuration
app.add_defaults(lambda: celery_config(Settings()))

"""The Celery application of a fleet, and the one task it runs: one VM.

Reliability across machines is Celery's, set here once for submitters and workers alike:

* ``acks_late``: a VM's message is acknowledged when its task has finished, not when a
  worker took it, so a proxy that dies mid-export leaves the message unacknowledged;
* ``reject_on_worker_lost``: a pool process killed under a live worker puts its message
  back at once;
* the Redis transport's ``visibility_timeout``: a message unacknowledged that long (its
  whole worker died) goes back to the queue for another proxy. It must be longer than the
  longest export, as a live export past it is delivered again (the per-VM lock and the
  job's record then keep the second delivery from exporting anything);
* one message reserved per pool process (``worker_prefetch_multiplier = 1``), so a busy
  proxy does not sit on VMs another could start.
"""

from __future__ import annotations

import logging

from celery import Celery
from celery.exceptions import Reject

from vcbproxy import errors
from vcbproxy.fleet import worker

log = logging.getLogger(__name__)

QUEUE = "vcbproxy"
TASK = "vcbproxy.fleet.vm"
DEFAULT_VISIBILITY_TIMEOUT = 6 * 3600.0  # longer than any export a proxy should run

app = Celery("vcbproxy", set_as_current=False)


def configure(
    broker_url: str,
    *,
    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT,
    restore_interval: float = 10.0,
) -> Celery:
    """Point the application at ``broker_url`` (broker and result store alike)."""
    transport = {
        "visibility_timeout": visibility_timeout,
        # How often a worker looks for messages whose holder vanished (kombu's sweep).
        "unacked_restore_interval": restore_interval,
        "unacked_restore_throttle": 1,
        "socket_connect_timeout": 5,
    }
    app.conf.update(
        broker_url=broker_url,
        result_backend=broker_url,
        broker_transport_options=transport,
        result_backend_transport_options={"socket_connect_timeout": 5},
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a running worker waits out a broker restart
        task_default_queue=QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        task_track_started=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=7 * 24 * 3600,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_channel_error_retry=True,
    )
    return app


@app.task(name=TASK, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None)
def fleet_vm(self, request: dict) -> dict:
    """Export or back up one VM on this proxy (vcbproxy.fleet.worker.run)."""
    try:
        return worker.run(request, delivery=self.request.id)
    except worker.Busy as busy:
        # The VM, one of its datastores or its host is at its limit: back to the end of the
        # queue, so other VMs go first (the worker already waited a moment).
        log.info("%s", busy)
        raise self.retry(countdown=0, max_retries=None) from None
    except errors.Interrupted as exc:
        # This proxy is shutting down: cleanup ran; another proxy takes the VM.
        log.warning("%s: %s; handing the VM back to the queue", request.get("name"), exc)
        raise Reject(str(exc), requeue=True) from None

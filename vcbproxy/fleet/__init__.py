"""Many proxies: VMs handed out by Celery over Redis, with per-datastore and per-host limits.

* :mod:`.broker`: the broker URL, a Redis client, connection failures as exit 18;
* :mod:`.leases`: the per-VM lock and the per-datastore / per-host semaphores in Redis, each
  with an expiry its holder renews, so a dead holder's share comes back by itself;
* :mod:`.store`: a fleet job and the state of each of its VMs, kept in Redis;
* :mod:`.app`: the Celery application and its reliability settings (late acks, redelivery);
* :mod:`.worker`: what one proxy does with one VM (the task's body);
* :mod:`.submit`: one task per VM a selector names.

Celery and redis-py are the ``fleet`` extra (``pip install 'vcbproxy[fleet]'``); nothing
outside this package imports them.
"""

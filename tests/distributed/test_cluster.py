"""distributed/cluster.py: a cluster whose workers are still starting is waited for."""

import threading

import pytest

from knetflow.distributed.cluster import Connection


@pytest.mark.timeout(120)
def test_workers_waits_for_a_worker_that_joins_late():
    from distributed import Client, LocalCluster

    # in-process (threads, no network): the worker comes when the timer scales the cluster
    cluster = LocalCluster(n_workers=0, processes=False, dashboard_address=None)
    client = Client(cluster)
    try:
        conn = Connection(client)
        assert conn.workers(wait=0) == []
        timer = threading.Timer(1.0, cluster.scale, args=(1,))
        timer.start()
        found = conn.workers(wait=60)
        timer.join()
        assert len(found) == 1
    finally:
        client.close()
        cluster.close()

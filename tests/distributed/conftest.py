"""A LocalCluster per test module: 2 worker processes, 1 thread each, on 127.0.0.1."""

import logging

import pytest


def start_cluster(n_workers=2, **kwargs):
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address="127.0.0.1:0", **kwargs)
    return cluster, Client(cluster)


@pytest.fixture(scope="module")
def client():
    logging.getLogger("distributed").setLevel(logging.WARNING)
    cluster, client = start_cluster()
    yield client
    client.close()
    cluster.close()


@pytest.fixture
def workers(client):
    """The two workers, once both are up (a test may have killed one: its nanny restarts it)."""
    client.wait_for_workers(2, timeout=60)
    return sorted(client.scheduler_info()["workers"])

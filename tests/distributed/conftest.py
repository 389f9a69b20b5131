"""A LocalCluster per test module: 2 worker processes, 1 thread each, on 127.0.0.1.

Every test here has a time limit (pytest-timeout), so that a hang shows as a
failure with a traceback rather than a stalled run: far above what a test
takes on a slow 2-core machine (a few seconds), well below a silent peer's
timeout (300 s).
"""

import logging
import pathlib

import pytest

TEST_SECONDS = 120
_HERE = pathlib.Path(__file__).parent

# Killed workers are restarted by their nanny. A LocalCluster also closes for good a worker
# that is missing 15 s (by default) after it was lost: with one test killing a worker
# while another kill's 15 s run out, the cluster lost a worker for the rest of the module.
_CONFIG = {"distributed.deploy.lost-worker-timeout": "1h"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _HERE in pathlib.Path(item.path).parents and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(TEST_SECONDS))


def start_cluster(n_workers=2, **kwargs):
    """A LocalCluster and its client (close both: `stop_cluster`)."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address="127.0.0.1:0", **kwargs)
    try:
        return cluster, Client(cluster)
    except BaseException:
        cluster.close(timeout=30)
        raise


def stop_cluster(cluster, client) -> None:
    """Close the client, then the cluster even if that failed; never waits forever."""
    try:
        client.close(timeout=30)
    finally:
        cluster.close(timeout=30)


@pytest.fixture(scope="module")
def client():
    import dask
    import distributed  # noqa: F401 - its config defaults first, then _CONFIG over them

    logging.getLogger("distributed").setLevel(logging.WARNING)
    with dask.config.set(_CONFIG):
        cluster, client = start_cluster()
        try:
            yield client
        finally:
            stop_cluster(cluster, client)


@pytest.fixture
def workers(client):
    """The two workers, once both are up (a test may have killed one: its nanny restarts it)."""
    client.wait_for_workers(2, timeout=60)
    return sorted(client.scheduler_info()["workers"])

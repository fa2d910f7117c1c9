import pytest

from amqp_helpers import close_main_connections, delete_created


@pytest.fixture(autouse=True)
def _cleanup_after_test():
    """Close connections a failed test left open and delete the queues and
    exchanges it created, so failures do not leak into later tests/runs."""
    yield
    close_main_connections()
    delete_created()

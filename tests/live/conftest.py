import pytest

from tests.conftest import live_reason


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/live/" in str(item.fspath):
            item.add_marker(pytest.mark.live)


@pytest.fixture(autouse=True)
def _needs_live(request):
    reason = live_reason()
    if reason:
        pytest.skip(reason)

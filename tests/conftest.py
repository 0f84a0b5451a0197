import os

import pytest

SHARED_DATA = os.path.abspath(
    os.environ.get(
        "CT_LESION_SHARED_DATA",
        os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"),
    )
)


@pytest.fixture
def shared_data():
    """Path of the real CT samples (``../shared/data``); skips the test where it is absent."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"real CT samples not found at {SHARED_DATA} (set CT_LESION_SHARED_DATA)")
    return SHARED_DATA

import pytest

from e2e_helpers import REPO


@pytest.fixture
def math_config() -> str:
    return str(REPO / "examples" / "math" / "config.yaml")

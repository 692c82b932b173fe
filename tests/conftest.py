pytest_plugins = ["tests.fixtures_server", "tests.fixtures_standin"]


def pytest_collection_modifyitems(config, items):  # type: ignore[no-untyped-def]
    """Skip ``@pytest.mark.gpu`` tests, saying why, where no GPU build can run."""
    import pytest

    from tests.gpu import gpu_missing_reason

    reason = gpu_missing_reason() if any("gpu" in item.keywords for item in items) else None
    if reason:
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(pytest.mark.skip(reason=f"needs a GPU: {reason}"))

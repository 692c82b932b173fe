pytest_plugins = ["tests.fixtures_server", "tests.fixtures_standin"]

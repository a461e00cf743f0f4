"""Every test can use the devstack fixtures (real S3 server process, emulators, stand-ins) and
the Dagster ones on top of them (tests/dagster_fixtures.py); the session fails if the tests
leave temp files or processes behind (tests/leakcheck.py)."""

pytest_plugins = ["rp_devstack.pytest_plugin", "tests.dagster_fixtures", "tests.leakcheck"]

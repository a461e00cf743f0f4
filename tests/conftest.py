"""Every test can use the devstack fixtures (real S3 server process, emulators, stand-ins)."""

pytest_plugins = ["rp_devstack.pytest_plugin"]

"""Test plugins: the sandbox sshd cluster and the docker-compose cluster."""

pytest_plugins = [
    "tests.fixtures_sandbox",
    "tests.fixtures_docker",
    "tests.fixtures_clusters",
]

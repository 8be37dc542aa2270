"""What the lab reads from a primary Deployment to choose the version the emulator plays,
and which versions the emulator plays (docs/lab.md "The primary follows its release")."""

from __future__ import annotations

from typing import Any

import pytest

from coder_migrate.lab.coderd.core import ApiError
from coder_migrate.lab.coderd.release import mode_for_release
from coder_migrate.lab.pod_spec import container_mode, primary_version
from coder_migrate.lab.primary_release import PrimaryRelease

# coder/enterprise-helm 1.20.0 templates/coderd.yaml:154-163: `coderd run` behind bash.
V1_20_COMMAND = ["/bin/bash", "-c", "echo Waiting on db;\n/wait_postgres.sh\n"
                 "# Pass signals down to the envmanager.\nexec /entrypoint.sh coderd run\n"]


def deployment(image: str, namespace: str = "coder", release: str = "coder",
               replicas: int = 1, **container: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "coderd", "namespace": namespace,
                     "annotations": {"meta.helm.sh/release-name": release}},
        "spec": {"replicas": replicas, "template": {"spec": {"containers": [
            {"name": "coderd", "image": image, **container}]}}},
    }


def test_a_1_20_primary_runs_coderd_behind_a_shell_script() -> None:
    assert container_mode({"command": V1_20_COMMAND}) == "primary"
    # coder/enterprise-helm 1.21.0 templates/coderd.yaml:186-188: args `coderd run`.
    assert container_mode({"command": ["/entrypoint.sh"], "args": ["coderd", "run"]}) == "primary"
    assert container_mode({"args": ["coderd", "replica"]}) == "satellite"


@pytest.mark.parametrize(("image", "version"), [
    ("docker.io/coderenvs/coder-service:1.20.0", "1.20.0"),
    ("docker.io/coderenvs/coder-service:1.21.0@sha256:" + "0" * 64, "1.21.0"),
    ("registry:5000/coder-service", None),
])
def test_the_version_is_the_primary_image_tag(image: str, version: str | None) -> None:
    assert primary_version(deployment(image, command=V1_20_COMMAND)) == version


def test_no_version_from_a_satellite_or_a_primary_scaled_to_0() -> None:
    image = "docker.io/coderenvs/coder-service:1.21.0"
    assert primary_version(deployment(image, args=["coderd", "replica"])) is None
    assert primary_version(deployment(image, replicas=0, args=["coderd", "run"])) is None


def test_only_the_lab_s_primary_release_is_followed(tmp_path: Any) -> None:
    primary = PrimaryRelease("lab-primary", "coder", "coder", "http://127.0.0.1:1", tmp_path)
    image = "docker.io/coderenvs/coder-service:1.20.0"
    other = deployment(image, namespace="coder-test", release="coder", args=["coderd", "run"])
    assert primary.deployed_version([other]) is None
    ours = deployment(image, args=["coderd", "run"])
    assert primary.deployed_version([other, ours]) == "1.20.0"


def test_the_emulator_plays_1_20_and_1_21_as_v1_and_refuses_other_releases() -> None:
    assert mode_for_release("v1.21", "1.20.0") == ("v1.20", "1.20.0")
    assert mode_for_release("v1.20", "1.21.3") == ("v1.21", "1.21.3")
    assert mode_for_release("v2", "2.15.0") == ("v2", "v2.15.0")
    for current, version in (("v1.21", "1.19.0"), ("v1.21", "v2.15.0"), ("v2", "1.21.0"),
                             ("v1.21", "latest")):
        with pytest.raises(ApiError) as refused:
            mode_for_release(current, version)
        assert refused.value.status == 400

"""docker/compose.yaml: structure, required secrets, loopback-only ports.

These run everywhere; tests/cluster/ runs the stack itself where Docker is (opt-in).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

DOCKER = Path(__file__).resolve().parents[2] / "docker"
# Compose interpolation: $$ (a literal $), ${VAR}, ${VAR:-default}, ${VAR:?error} ... nothing else.
VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Z_][A-Z0-9_]*)(?:(?P<op>:-|:\?)(?P<arg>[^}]*))?\}")
ENV = {"POSTGRES_PASSWORD": "pw", "RAY_AUTH_TOKEN": "tok"}


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution; a required variable that is unset raises KeyError."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name", "op", "arg")
        if name in env:
            return env[name]
        if op == ":-":
            return arg
        if op == ":?":
            raise KeyError(f"{name}: {arg}")
        return ""

    return VARIABLE.sub(substitute, text)


def compose(env: dict[str, str]) -> dict[str, Any]:
    return yaml.safe_load(interpolate(compose_text(), env))


def compose_text() -> str:
    lines = (DOCKER / "compose.yaml").read_text().splitlines()
    return "\n".join(line for line in lines if not line.lstrip().startswith("#"))


def test_every_dollar_is_a_valid_compose_variable() -> None:
    text = compose_text()
    assert text.count("$") == sum(m.group(0).count("$") for m in VARIABLE.finditer(text))


def test_secrets_are_required_from_the_environment() -> None:
    for name in ENV:
        missing = {k: v for k, v in ENV.items() if k != name}
        try:
            compose(missing)
        except KeyError as err:
            assert name in str(err)
        else:
            raise AssertionError(f"compose.yaml does not require {name}")


def test_services_and_ray_wiring() -> None:
    services = compose(ENV)["services"]
    assert set(services) == {
        "postgres",
        "ray-head",
        "ray-worker",
        "ray-cpu-worker",
        "optuna-dashboard",
    }
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pw"
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])
    head, worker, cpu = services["ray-head"], services["ray-worker"], services["ray-cpu-worker"]
    assert "--head" in head["command"] and "--port=6379" in head["command"]
    assert "--address=ray-head:6379" in worker["command"] and "--block" in worker["command"]
    assert cpu["command"] == worker["command"] and cpu["profiles"] == ["cpu"]
    assert "deploy" not in cpu  # a CPU-only host cannot satisfy the GPU reservation
    for node in (head, worker, cpu):
        assert node["image"] == services["optuna-dashboard"]["image"] == "robustbench-opt:latest"
        assert node["environment"]["RAY_AUTH_MODE"] == "token"
        assert node["environment"]["RAY_AUTH_TOKEN"] == "tok"
        assert node["environment"]["ROBUSTBENCH_STORAGE"].startswith("postgresql+psycopg://")
        assert ":pw@postgres:5432/" in node["environment"]["ROBUSTBENCH_STORAGE"]
    (device,) = worker["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert head["build"]["dockerfile"] == "docker/Dockerfile"
    assert (DOCKER / head["build"]["context"]).resolve() == DOCKER.parent
    dashboard = " ".join(services["optuna-dashboard"]["command"])
    assert "optuna-dashboard" in dashboard and ":pw@postgres:5432/" in dashboard


def test_published_ports_are_bound_to_loopback_only() -> None:
    services = compose(ENV)["services"]
    published = {name: s.get("ports", []) for name, s in services.items()}
    assert published["ray-worker"] == published["ray-cpu-worker"] == []
    assert {p.split(":")[2] for p in published["ray-head"]} == {"6379", "8265", "10001"}
    assert published["optuna-dashboard"] == ["127.0.0.1:8080:8080"]
    for ports in published.values():
        for port in ports:
            assert isinstance(port, str) and port.startswith("127.0.0.1:"), port


def test_dockerfile_installs_the_package_on_a_cuda_pytorch_base() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=pytorch/pytorch:\S+-cuda12\.\d+-\S+$", text, re.M)
    assert "FROM ${BASE_IMAGE}" in text
    assert re.search(r'pip install "\.\[postgres,dashboard\]"', text)  # driver + dashboard

"""The Dockerfile and deploy/k8s manifests agree with the code they deploy.

Docker and a Kubernetes cluster cannot run here, so these tests parse the files and check
what would otherwise only break at deploy time: the port (listen URL, container port,
EXPOSE, Service), the probe paths (answered 200 by a real Gateway), the environment
variable names and values (fed through :func:`tickhub.config.load_config`), the secret,
the shutdown budget against the drain, and that the HPA, PDB and Service select the pods.
The Dockerfile's HEALTHCHECK command is run for real against a real Gateway.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import json
import shlex
import signal
import socket
import sys
import tomllib
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import websockets
import yaml  # type: ignore[import-untyped]

from servers import free_port
from tickhub import cli
from tickhub.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
DOCKERFILE = ROOT / "Dockerfile"

#: What the kubelet puts in TICKHUB_INSTANCE_ID (fieldRef metadata.name) for a pod.
POD_NAME = "tickhub-7c9d5b6f4d-x2x7q"
#: Stands in for the Secret's value: long enough for HS256 in production (32 bytes).
JWT_SECRET = "k" * 48
#: Seconds of slack the grace period must leave after preStop and the worst-case drain.
GRACE_MARGIN = 5.0
#: Env names tickhub reads that are not Config fields (read by load_config itself).
EXTRA_ENV_NAMES = {"HUB_JWT_PUBLIC_KEY_FILE"}


# --- loading ------------------------------------------------------------------------------

def manifests() -> dict[str, dict[str, Any]]:
    """Every Kubernetes object under deploy/k8s (not the Kustomization), by kind."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None or doc["kind"] == "Kustomization":
                continue
            assert doc["kind"] not in out, f"two {doc['kind']} objects ({path.name})"
            out[doc["kind"]] = doc
    return out


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = manifests()["Deployment"]["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    only: dict[str, Any]
    (only,) = pod_spec()["containers"]
    return only


def env_entries() -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container()["env"]}


def pod_environment() -> dict[str, str]:
    """The environment the kubelet would give the container: literal values, the
    ConfigMap's keys, the pod name, and a stand-in for the Secret."""
    configmap = manifests()["ConfigMap"]
    out: dict[str, str] = {}
    for name, entry in env_entries().items():
        if "value" in entry:
            out[name] = entry["value"]
            continue
        source = entry["valueFrom"]
        if "configMapKeyRef" in source:
            ref = source["configMapKeyRef"]
            assert ref["name"] == configmap["metadata"]["name"], f"{name}: unknown ConfigMap"
            if ref["key"] in configmap["data"]:
                out[name] = configmap["data"][ref["key"]]
            else:
                assert ref.get("optional"), f"{name}: key {ref['key']!r} not in the ConfigMap"
        elif "secretKeyRef" in source:
            out[name] = JWT_SECRET
        elif source.get("fieldRef", {}).get("fieldPath") == "metadata.name":
            out[name] = POD_NAME
        else:
            raise AssertionError(f"{name}: unexpected valueFrom {source}")
    return out


def known_env_names() -> set[str]:
    names = set(EXTRA_ENV_NAMES)
    for f in dataclasses.fields(Config):
        names.update(f.metadata["env"])
    return names


def dockerfile_final_stage() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile's last stage, continuations joined."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    stages: list[list[tuple[str, str]]] = []
    for entry in logical:
        instruction, _, args = entry.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction.upper(), args.strip()))
    assert len(stages) >= 2, "the Dockerfile should be multi-stage (build, runtime)"
    return stages[-1]


def docker_instructions(name: str) -> list[str]:
    return [args for instruction, args in dockerfile_final_stage() if instruction == name]


def docker_env() -> dict[str, str]:
    out: dict[str, str] = {}
    for args in docker_instructions("ENV"):
        for item in shlex.split(args):
            key, _, value = item.partition("=")
            out[key] = value
    return out


def prestop_sleep_seconds() -> float:
    command = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, command
    return float(command[1])


# --- the process configuration ------------------------------------------------------------

def test_every_deployment_and_configmap_env_name_is_one_tickhub_reads() -> None:
    known = known_env_names()
    unknown = set(env_entries()) - known
    assert not unknown, f"env names tickhub does not read: {sorted(unknown)}"
    unknown_keys = set(manifests()["ConfigMap"]["data"]) - known
    assert not unknown_keys, f"ConfigMap keys tickhub does not read: {sorted(unknown_keys)}"


def test_pod_environment_is_a_valid_production_config_on_the_container_port() -> None:
    config = load_config([], environ=pod_environment(), env_file=None)
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert config.listen_port == ports["ws"]
    assert config.listen_host == "0.0.0.0", "the hub must bind every interface in a pod"
    assert config.production and config.auth_required
    assert config.instance_id == POD_NAME
    assert config.bus == "redis" and config.redis_url is not None
    assert config.kafka_broker_url is not None


def test_jwt_secret_comes_from_a_secret_and_no_secret_is_committed() -> None:
    entry = env_entries()["HUB_JWT_SECRET"]
    ref = entry["valueFrom"]["secretKeyRef"]
    assert ref["key"] == "HUB_JWT_SECRET" and not ref.get("optional", False)
    assert "HUB_JWT_SECRET" not in manifests()["ConfigMap"]["data"]
    assert "Secret" not in manifests(), "commit no Secret: create it with kubectl (README, Kubernetes)"
    assert "kubectl create secret generic " + ref["name"] in (ROOT / "README.md").read_text()


def test_instance_id_is_the_pod_name() -> None:
    entry = env_entries()["TICKHUB_INSTANCE_ID"]
    assert entry["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_grace_period_covers_prestop_and_the_whole_drain() -> None:
    """Gateway.stop spreads the 1001 closes over drain_seconds, then waits up to
    max(3, drain_seconds) for the closing handshakes; the kubelet counts the preStop hook
    inside terminationGracePeriodSeconds and SIGKILLs when it runs out."""
    drain = load_config([], environ=pod_environment(), env_file=None).drain_seconds
    needed = prestop_sleep_seconds() + drain + max(3.0, drain) + GRACE_MARGIN
    grace = pod_spec()["terminationGracePeriodSeconds"]
    assert grace >= needed, f"terminationGracePeriodSeconds {grace} < {needed:g} s needed"
    assert prestop_sleep_seconds() > 0, "preStop must give endpoint removal time to propagate"


# --- probes against a real Gateway --------------------------------------------------------

def _status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def test_probe_paths_are_served_on_the_named_container_port(make_hub: Any) -> None:
    probes = {kind: container()[kind]["httpGet"] for kind in ("readinessProbe", "livenessProbe")}
    port_names = {p["name"] for p in container()["ports"]}
    hub = await make_hub()
    for kind, probe in probes.items():
        assert probe["port"] in port_names, f"{kind} port {probe['port']!r} is not a container port"
        assert await asyncio.to_thread(_status, hub.port, probe["path"]) == 200, kind
    # /readyz is the path that turns 503 on SIGTERM (tests/test_cli.py drives that).
    assert probes["readinessProbe"]["path"] == "/readyz", "readiness must follow the drain"


# --- objects select and target each other -------------------------------------------------

def pod_labels() -> dict[str, str]:
    labels: dict[str, str] = manifests()["Deployment"]["spec"]["template"]["metadata"]["labels"]
    return labels


def _selects(selector: dict[str, str]) -> bool:
    return bool(selector) and all(pod_labels().get(k) == v for k, v in selector.items())


def test_deployment_service_and_pdb_select_the_pods() -> None:
    objs = manifests()
    assert _selects(objs["Deployment"]["spec"]["selector"]["matchLabels"])
    assert _selects(objs["Service"]["spec"]["selector"])
    assert _selects(objs["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"])


def test_service_targets_the_named_container_port() -> None:
    port_names = {p["name"] for p in container()["ports"]}
    for port in manifests()["Service"]["spec"]["ports"]:
        assert port["targetPort"] in port_names, port


def test_hpa_scales_the_deployment_and_the_pdb_leaves_pods_serving() -> None:
    objs = manifests()
    hpa, deployment, pdb = objs["HorizontalPodAutoscaler"], objs["Deployment"], objs["PodDisruptionBudget"]
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["minReplicas"] <= deployment["spec"]["replicas"] <= hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and "cpu" in container()["resources"]["requests"]
    # At the HPA's minimum, a voluntary disruption still leaves at least two pods.
    minimum = hpa["spec"]["minReplicas"]
    left = pdb["spec"]["minAvailable"] if "minAvailable" in pdb["spec"] else minimum - pdb["spec"]["maxUnavailable"]
    assert left >= 2


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files


# --- the image ----------------------------------------------------------------------------

def test_image_runs_tickhub_serve_as_a_non_root_user() -> None:
    (entrypoint,) = docker_instructions("ENTRYPOINT")
    assert json.loads(entrypoint) == ["tickhub", "serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["tickhub"] == "tickhub.cli:main" and "serve" in cli.COMMANDS
    (user,) = docker_instructions("USER")
    uid = user.partition(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {user}: numeric and not root (runAsNonRoot)"
    security = pod_spec()["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] == int(uid)


def test_image_env_and_expose_agree_with_the_deployment() -> None:
    environ = docker_env()
    image = load_config([], environ={**environ, "HUB_JWT_SECRET": JWT_SECRET}, env_file=None)
    (expose,) = docker_instructions("EXPOSE")
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    assert int(expose.partition("/")[0]) == image.listen_port == ports["ws"]
    assert image.production
    for name in ("NEXT_PUBLIC_HUB_WS_URL", "NODE_ENV"):
        assert env_entries()[name]["value"] == environ[name]


def test_docker_context_keeps_what_the_build_copies() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources: list[str] = []
    build_stage = DOCKERFILE.read_text().split("\nFROM ")[1]
    for line in build_stage.splitlines():
        if line.startswith("COPY ") and "--from=" not in line:
            sources += line.split()[1:-1]
    assert {"pyproject.toml", "setup.py", "ext", "src"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        ignored = [p for p in patterns if not p.startswith("!") and fnmatch.fnmatch(source, p)]
        assert not ignored, f"COPY {source} is excluded by .dockerignore {ignored}"


async def _run_healthcheck(listen_url: str) -> int:
    (healthcheck,) = docker_instructions("HEALTHCHECK")
    command = json.loads(healthcheck.partition(" CMD ")[2])
    assert command[0] == "python"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *command[1:], env={"NEXT_PUBLIC_HUB_WS_URL": listen_url},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        async with asyncio.timeout(15):
            return await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_healthcheck_command_passes_on_a_live_hub_and_fails_without_one(make_hub: Any) -> None:
    assert "/healthz" in docker_instructions("HEALTHCHECK")[0]
    hub = await make_hub()
    assert await _run_healthcheck(f"ws://0.0.0.0:{hub.port}") == 0
    assert await _run_healthcheck(f"ws://0.0.0.0:{free_port()}") != 0



# --- the local cluster (scripts/cluster_demo.py) ------------------------------------------

async def _trade_ids(url: str, n: int) -> list[int]:
    async with websockets.connect(url) as ws:
        ids: list[int] = []
        async with asyncio.timeout(15):
            while len(ids) < n:
                event = orjson.loads(await ws.recv())
                if event.get("e") == "trade":
                    ids.append(event["t"])
        return ids


async def test_cluster_demo_serves_the_same_trades_on_every_instance_and_stops_on_ctrl_c() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "scripts" / "cluster_demo.py"), "--base-port", "0",
        "--log-level", "WARNING", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert proc.stdout is not None
    urls: dict[str, str] = {}
    drain: asyncio.Task[bytes] | None = None
    try:
        async with asyncio.timeout(60):
            while (line := (await proc.stdout.readline()).decode()) != "ready\n":
                assert line, f"cluster_demo exited with {await proc.wait()} before it was ready"
                name, _, url = line.strip().partition(" ")
                if name.startswith("hub-") and url.startswith("ws://"):
                    urls[name] = url
        assert sorted(urls) == ["hub-1", "hub-2", "hub-3"]
        drain = asyncio.ensure_future(proc.stdout.read())  # keep the pipe from filling
        first, last = await asyncio.gather(_trade_ids(f"{urls['hub-1']}/ws/btcusdt@trade", 10),
                                           _trade_ids(f"{urls['hub-3']}/ws/btcusdt@trade", 10))
        assert set(first) & set(last), f"no common trades: {first} vs {last}"
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
        for url in urls.values():
            port = urlsplit(url).port
            assert port is not None
            with pytest.raises(OSError):  # every hub process is gone
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        if proc.returncode is None:
            # SIGTERM lets the script stop its children by pid; SIGKILL would orphan them.
            proc.terminate()
            try:
                async with asyncio.timeout(30):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if drain is not None:
            await drain

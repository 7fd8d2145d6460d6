"""The deployment files: every manifest under k8s/ against the Kubernetes schemas (shipped
offline by kubernetes-validate) and the RayCluster against KubeRay's own RayCluster CRD schema
(vendored in k8s/schemas/, see its README), plus the wiring no schema can see: probes,
placement, environment, tokens, resources, and the Dockerfile's paths and commands. No cluster
or Docker engine needed."""

from __future__ import annotations

import copy
import functools
import importlib.util
import json
import re
import shlex
from fnmatch import fnmatch
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from django.core.management import load_command_class

from tests.conftest import ROOT
from tests.unit.structural_schema import cel_rules, validator_for, values_at

K8S = ROOT / "k8s"
# The oldest Kubernetes minor still in wide support; the manifests use nothing newer.
KUBERNETES_VERSION = "1.30.0"
RAYCLUSTER_CRD = K8S / "schemas" / "raycluster-v1.crd-schema.json"


def manifest_files() -> list[Path]:
    return sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def load_documents() -> list[dict]:
    docs = []
    for path in manifest_files():
        docs += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return docs


DOCUMENTS = load_documents()
CORE_DOCUMENTS = [doc for doc in DOCUMENTS if doc["kind"] != "RayCluster"]


def doc_id(doc: dict) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


def one(kind: str, name: str | None = None) -> dict:
    found = [d for d in DOCUMENTS if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def raycluster() -> dict:
    return one("RayCluster")


def pod_templates() -> dict[str, dict]:
    """Every pod template by owner: Deployments, Jobs, and the RayCluster's head and workers."""
    templates = {}
    for doc in DOCUMENTS:
        if doc["kind"] in ("Deployment", "Job"):
            templates[doc_id(doc)] = doc["spec"]["template"]
    spec = raycluster()["spec"]
    templates["RayCluster/head"] = spec["headGroupSpec"]["template"]
    for group in spec.get("workerGroupSpecs", []):
        templates[f"RayCluster/{group['groupName']}"] = group["template"]
    return templates


def env_of(template: dict) -> dict[str, dict]:
    (container,) = template["spec"]["containers"]
    return {item["name"]: item for item in container.get("env", [])}


def validate_pod_template(template: dict, name: str) -> None:
    """A RayCluster inlines core/v1 PodTemplateSpec; check it as Kubernetes would."""
    wrapper = {
        "apiVersion": "v1",
        "kind": "PodTemplate",
        "metadata": {"name": name},
        "template": template,
    }
    kubernetes_validate.validate(wrapper, KUBERNETES_VERSION, strict=True)


# Schemas


@pytest.mark.parametrize("doc", CORE_DOCUMENTS, ids=doc_id)
def test_core_manifest_matches_the_kubernetes_schema(doc):
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@functools.cache
def raycluster_crd() -> dict:
    """The vendored schema: `source` (where it came from) and the `openAPIV3Schema`."""
    return json.loads(RAYCLUSTER_CRD.read_text())


@functools.cache
def raycluster_validator() -> jsonschema.protocols.Validator:
    return validator_for(raycluster_crd()["openAPIV3Schema"])


def head_container(cluster: dict) -> dict:
    return cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]


def test_the_vendored_crd_schema_is_kuberays_raycluster_v1():
    source = raycluster_crd()["source"]
    assert source["repository"] == "ray-project/kuberay"
    assert source["path"] == "ray-operator/config/crd/bases/ray.io_rayclusters.yaml"
    assert re.fullmatch(r"[0-9a-f]{40}", source["commit"]) and source["version"] == "v1"
    spec = raycluster_crd()["openAPIV3Schema"]["properties"]["spec"]
    assert spec["required"] == ["headGroupSpec"]
    worker = spec["properties"]["workerGroupSpecs"]["items"]
    assert {"groupName", "minReplicas", "maxReplicas", "template"} <= set(worker["required"])


def test_raycluster_matches_the_kuberay_crd():
    cluster = raycluster()
    raycluster_validator().validate(cluster)
    # The CRD leaves metadata to the API server, which checks it as core ObjectMeta.
    metadata_only = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": cluster["metadata"]}
    kubernetes_validate.validate(metadata_only, KUBERNETES_VERSION, strict=True)
    # The CRD inlines the pod schema of the Kubernetes KubeRay was built against (newer than
    # 1.30); Kubernetes 1.30's own schema catches a field that 1.30 would not know.
    for name, template in pod_templates().items():
        if name.startswith("RayCluster/"):
            validate_pod_template(template, name.replace("/", "-").lower())


def test_crd_rules_jsonschema_cannot_run_do_not_apply_to_the_raycluster():
    """CEL rules: each must compare with oldSelf (it runs only on update) or sit on a field
    the manifest leaves unset, so the schema checks above miss nothing the API server checks."""
    rules = list(cel_rules(raycluster_crd()["openAPIV3Schema"]))
    assert rules, "no CEL rules found: is x-kubernetes-validations still where it was?"
    for path, rule in rules:
        if "oldSelf" not in rule:
            assert not list(values_at(raycluster(), path)), (path, rule)


CRD_MISTAKES = {
    # name: (change to the manifest, JSON path of the error, keyword that rejects it)
    "misspelt-worker-field": (
        lambda c: c["spec"]["workerGroupSpecs"][0].update(maxReplica=3),
        "$.spec.workerGroupSpecs[0]",
        "additionalProperties",
    ),
    "replicas-as-a-string": (
        lambda c: c["spec"]["workerGroupSpecs"][0].update(replicas="2"),
        "$.spec.workerGroupSpecs[0].replicas",
        "type",
    ),
    "worker-group-without-a-name": (
        lambda c: c["spec"]["workerGroupSpecs"][0].pop("groupName"),
        "$.spec.workerGroupSpecs[0]",
        "required",
    ),
    "unknown-upgrade-strategy": (
        lambda c: c["spec"].update(upgradeStrategy={"type": "Rolling"}),
        "$.spec.upgradeStrategy.type",
        "enum",
    ),
    "misspelt-container-field": (
        lambda c: head_container(c).update(imagee="seedcore:0.1.0"),
        "$.spec.headGroupSpec.template.spec.containers[0]",
        "additionalProperties",
    ),
    "cpu-limit-not-a-quantity": (
        lambda c: head_container(c)["resources"]["limits"].update(cpu="two"),
        "$.spec.headGroupSpec.template.spec.containers[0].resources.limits.cpu",
        "pattern",
    ),
    "duplicate-env-var": (
        lambda c: head_container(c)["env"].append({"name": "RAY_AUTH_MODE", "value": "x"}),
        "$.spec.headGroupSpec.template.spec.containers[0].env",
        "x-kubernetes-list-type",
    ),
    "max-replicas-over-int32": (
        lambda c: c["spec"]["workerGroupSpecs"][0].update(maxReplicas=2**31),
        "$.spec.workerGroupSpecs[0].maxReplicas",
        "format",
    ),
}


@pytest.mark.parametrize("mistake", CRD_MISTAKES)
def test_the_crd_schema_rejects_a_broken_raycluster(mistake):
    change, json_path, keyword = CRD_MISTAKES[mistake]
    cluster = copy.deepcopy(raycluster())
    change(cluster)
    errors = {(e.json_path, e.validator) for e in raycluster_validator().iter_errors(cluster)}
    assert (json_path, keyword) in errors, errors
    if keyword in ("type", "required", "enum", "pattern"):
        # These come from KubeRay's schema as vendored, not from the strict reading of it.
        plain = jsonschema.Draft202012Validator(raycluster_crd()["openAPIV3Schema"])
        assert not plain.is_valid(cluster)


def test_kubernetes_validate_rejects_a_misspelt_field():
    """Strict mode catches typos the API server would drop or refuse."""
    deployment = copy.deepcopy(one("Deployment", "seedcore-web"))
    deployment["spec"]["template"]["spec"]["containers"][0]["imagee"] = "typo"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)

    template = copy.deepcopy(raycluster()["spec"]["headGroupSpec"]["template"])
    template["spec"]["containers"][0]["envv"] = []
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_pod_template(template, "head")


def test_kustomization_lists_every_manifest_and_nothing_else():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(p.name for p in manifest_files())
    namespaces = [d["metadata"]["name"] for d in DOCUMENTS if d["kind"] == "Namespace"]
    assert namespaces == [kustomization["namespace"]]


# Wiring


def test_every_container_requests_and_limits_cpu_and_memory():
    for name, template in pod_templates().items():
        for container in template["spec"]["containers"]:
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert set(resources.get(kind, {})) >= {"cpu", "memory"}, (name, kind)


def test_every_pod_runs_the_one_seedcore_image():
    images = {c["image"] for t in pod_templates().values() for c in t["spec"]["containers"]}
    assert len(images) == 1
    assert images.pop().split(":")[0] == "seedcore"


# The Secrets the pods read, which k8s/ does not create: docs/deployment.md's `kubectl create
# secret` commands make them, so no placeholder value is ever applied.
EXTERNAL_SECRETS = {
    "seedcore-secrets": {"DATABASE_URL", "SECRET_KEY"},
    "seedcore-ray-auth": {"auth_token"},
}


def test_no_manifest_ships_a_secret():
    assert not [doc_id(d) for d in DOCUMENTS if d["kind"] == "Secret"]
    for path in manifest_files():
        assert "change-me" not in path.read_text(), path


def test_the_secrets_the_pods_read_are_created_by_the_documented_commands():
    deployment = (ROOT / "docs" / "deployment.md").read_text()
    commands = re.findall(r"create secret generic (\S+)((?:\\\n|[^\n])*)", deployment)
    created = {name: set(re.findall(r"--from-literal=(\w+)=", rest)) for name, rest in commands}
    assert created == EXTERNAL_SECRETS


def test_config_and_secret_references_exist():
    names = {(d["kind"], d["metadata"]["name"]) for d in DOCUMENTS}
    for name, template in pod_templates().items():
        (container,) = template["spec"]["containers"]
        for source in container.get("envFrom", []):
            if "configMapRef" in source:
                assert ("ConfigMap", source["configMapRef"]["name"]) in names, name
            if "secretRef" in source:
                assert source["secretRef"]["name"] in EXTERNAL_SECRETS, name
        for item in container.get("env", []):
            ref = item.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in EXTERNAL_SECRETS.get(ref["name"], set()), (name, ref)


def test_settings_come_from_a_configmap_and_a_secret():
    config = one("ConfigMap", "seedcore-config")["data"]
    secret = EXTERNAL_SECRETS["seedcore-secrets"]
    assert {"RAY_ADDRESS", "RAY_NAMESPACE", "ALLOWED_HOSTS"} <= set(config)
    assert not set(config) & secret
    # Clients outside the Ray pods reach the head Service KubeRay names <cluster>-head-svc.
    head_service = f"{raycluster()['metadata']['name']}-head-svc"
    assert re.fullmatch(rf"ray://{head_service}:10001", config["RAY_ADDRESS"])


def test_ray_pods_and_ray_clients_share_the_token():
    config = one("ConfigMap", "seedcore-config")["data"]
    assert config["RAY_AUTH_MODE"] == "token"
    token_ref = {"name": "seedcore-ray-auth", "key": "auth_token"}
    for name, template in pod_templates().items():
        env = env_of(template)
        if name in ("Job/seedcore-migrate", "Deployment/seedcore-web"):
            # Migrations and the web app never touch Ray, so they never hold its token.
            assert "RAY_AUTH_TOKEN" not in env, name
            continue
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == token_ref, name
        if name.startswith("RayCluster/"):
            assert env["RAY_AUTH_MODE"]["value"] == "token", name


def test_web_deployment_probes_and_service():
    deployment = one("Deployment", "seedcore-web")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    allowed_hosts = one("ConfigMap", "seedcore-config")["data"]["ALLOWED_HOSTS"].split(",")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = container[probe]["httpGet"]
        assert get["path"] == path
        hosts = [h["value"] for h in get.get("httpHeaders", []) if h["name"] == "Host"]
        assert hosts and hosts[0] in allowed_hosts, f"{probe} would get 400 from ALLOWED_HOSTS"
    service = one("Service", "seedcore-web")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]


# Pod security


def test_every_pod_is_restricted_and_gets_no_service_account_token():
    """The 'restricted' Pod Security Standard, plus no token mounted: non-root, no privilege
    escalation, every capability dropped, the RuntimeDefault seccomp profile."""
    for name, template in pod_templates().items():
        spec = template["spec"]
        assert spec["automountServiceAccountToken"] is False, name
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in [*spec["containers"], *spec.get("initContainers", [])]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert not context["capabilities"].get("add"), name
            assert not context.get("privileged"), name
            assert context.get("runAsUser", pod["runAsUser"]) != 0, name


def test_seedcore_pods_have_a_read_only_root_and_writable_tmp_and_home():
    """Every pod but Ray's (which writes session files all over) runs with a read-only root."""
    for name, template in pod_templates().items():
        if name.startswith("RayCluster/"):
            continue
        spec = template["spec"]
        (container,) = spec["containers"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
        empty_dirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert {"/tmp", "/home/ray"} <= set(mounts), name
        assert {mounts["/tmp"], mounts["/home/ray"]} <= empty_dirs, name


def _selects(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value, operator = labels.get(expression["key"]), expression["operator"]
        if operator == "In" and value not in expression["values"]:
            return False
        if operator == "NotIn" and value in expression["values"]:
            return False
        if operator == "Exists" and value is None:
            return False
        if operator == "DoesNotExist" and value is not None:
            return False
    return True


def pod_labels() -> dict[str, dict]:
    """Each pod template's labels, with those KubeRay adds to the RayCluster's pods."""
    cluster = raycluster()["metadata"]["name"]
    labels = {}
    for name, template in pod_templates().items():
        labels[name] = dict(template["metadata"].get("labels", {}))
        if name.startswith("RayCluster/"):
            labels[name]["ray.io/cluster"] = cluster
    return labels


def test_only_ray_pods_and_seedcore_ray_clients_reach_rays_ports():
    (policy,) = [d for d in DOCUMENTS if d["kind"] == "NetworkPolicy"]
    spec = policy["spec"]
    labels = pod_labels()
    ray_pods = {name for name in labels if name.startswith("RayCluster/")}
    protected = {name for name, pod in labels.items() if _selects(spec["podSelector"], pod)}
    assert protected == ray_pods
    assert spec["policyTypes"] == ["Ingress"]
    # Who may reach them, and on which ports.
    clients = {name for name, t in pod_templates().items() if "RAY_AUTH_TOKEN" in env_of(t)}
    reaching: dict[str, set] = {}
    for rule in spec["ingress"]:
        for peer in rule["from"]:
            assert set(peer) == {"podSelector"}, "no ipBlock or other namespace"
            for name, pod in labels.items():
                if _selects(peer["podSelector"], pod):
                    ports = {p["port"] for p in rule.get("ports", [])} or {"all"}
                    reaching.setdefault(name, set()).update(ports)
    assert set(reaching) == clients  # the Ray pods and the bootstrap Job and supervisor
    assert "Deployment/seedcore-web" not in reaching and "Job/seedcore-migrate" not in reaching
    for name in clients - ray_pods:
        assert reaching[name] == {10001}, name  # Ray Client only
    assert "ray://" in one("ConfigMap", "seedcore-config")["data"]["RAY_ADDRESS"]


@pytest.mark.parametrize(
    ("kind", "name", "arguments"),
    [("Job", "seedcore-bootstrap", ["--detach"]), ("Deployment", "seedcore-supervisor", [])],
)
def test_rundispatcher_runs_beside_the_ray_head_by_pod_affinity(kind, name, arguments):
    spec = one(kind, name)["spec"]["template"]["spec"]
    assert "nodeSelector" not in spec, "KubeRay labels the head pod, not a node"
    (term,) = spec["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"] == {
        "ray.io/node-type": "head",
        "ray.io/cluster": raycluster()["metadata"]["name"],
    }
    assert spec["containers"][0]["command"] == ["python", "manage.py", "rundispatcher", *arguments]


def test_one_supervisor_at_a_time():
    supervisor = one("Deployment", "seedcore-supervisor")["spec"]
    assert supervisor["replicas"] == 1
    assert supervisor["strategy"]["type"] == "Recreate"


def test_manage_py_commands_in_the_manifests_parse():
    commands = [t["spec"]["containers"][0].get("command", []) for t in pod_templates().values()]
    managed = [c for c in commands if c[:2] == ["python", "manage.py"]]
    assert sorted(c[2] for c in managed) == ["migrate", "rundispatcher", "rundispatcher"]
    for command in managed:
        app = "django.core" if command[2] == "migrate" else "organism"
        parser = load_command_class(app, command[2]).create_parser("manage.py", command[2])
        parser.parse_args(command[3:])  # exits on an unknown option


# Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def test_dockerfile_copies_paths_that_exist_and_are_not_ignored():
    ignored = dockerignore_patterns()
    copies = [args for op, args in dockerfile_instructions() if op == "COPY"]
    assert copies
    for args in copies:
        *sources, _destination = shlex.split(args)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: no such path"
            assert not any(fnmatch(source, pattern) for pattern in ignored), source
    copied = {s.rstrip("/") for args in copies for s in shlex.split(args)[:-1]}
    for package in ("seedcore_site", "tasks", "organism", "dashboard", "templates", "static"):
        assert package in copied


def test_dockerfile_base_cmd_and_ray_version():
    instructions = dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    (cmd,) = [json.loads(args) for op, args in instructions if op == "CMD"]
    assert cmd[0] == "daphne"
    from daphne.cli import CommandLineInterface

    parsed = CommandLineInterface().parser.parse_args(cmd[1:])
    module, _, attribute = parsed.application.partition(":")
    assert attribute == "application"
    assert (ROOT / (module.replace(".", "/") + ".py")).exists()
    assert importlib.util.find_spec(module) is not None
    (ray_version,) = [
        args.split("=", 1)[1] for op, args in instructions if op == "ARG" and "RAY_VERSION" in args
    ]
    assert raycluster()["spec"]["rayVersion"] == ray_version


def test_ray_pods_read_the_database_and_key_from_the_secret():
    """Actors get DATABASE_URL and SECRET_KEY from their pods' environment, never from Ray's
    runtime_env (organism.ray.connect.actor_env_vars), which Ray's dashboard shows."""
    ray_pods = {n: t for n, t in pod_templates().items() if n.startswith("RayCluster/")}
    assert set(ray_pods) == {"RayCluster/head", "RayCluster/workers"}
    for name, template in ray_pods.items():
        env = env_of(template)
        for key in ("DATABASE_URL", "SECRET_KEY"):
            ref = env[key]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "seedcore-secrets", "key": key}, name

"""infra/k8s/: the rendered manifests validate against the schemas in tests/infra/schemas/ and agree with the repo.

Core objects are checked against Kubernetes' JSON schemas (v1.37.0, strict: unknown fields rejected),
RayCluster/RayJob against KubeRay v1.7.0's CRD OpenAPI schemas with unknown fields rejected as
`kubectl apply` (strict field validation) does. Sources and licenses: tests/infra/schemas/README.md.
"""

from __future__ import annotations

import json
import re
import shlex
from functools import cache
from pathlib import Path

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from infra.k8s.render import ORDER, RenderError, load_values, main, render
from pipelines.config import load_params
from tests.infra.test_infra_configs import dockerfile_stages, dockerfile_variants, locked, package_version

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "infra" / "k8s"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
K8S_SCHEMAS = SCHEMAS / "kubernetes-v1.37.0"
CRDS = SCHEMAS / "kuberay-v1.7.0"
CORE_SCHEMA = {
    ("v1", "Namespace"): "namespace-v1.json",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaim-v1.json",
    ("v1", "Service"): "service-v1.json",
    ("v1", "Secret"): "secret-v1.json",
    ("v1", "ConfigMap"): "configmap-v1.json",
    ("apps/v1", "Deployment"): "deployment-apps-v1.json",
    ("batch/v1", "Job"): "job-batch-v1.json",
}
CRD_FILE = {"RayCluster": "ray.io_rayclusters.yaml", "RayJob": "ray.io_rayjobs.yaml"}


def strict(schema: object) -> object:
    """A CRD schema that rejects unknown fields (apiserver strict field validation), except where it preserves them."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    preserves = out.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and "additionalProperties" not in out and not preserves:
        out["additionalProperties"] = False
    return out


@cache
def core_registry() -> Registry:
    definitions = json.loads((K8S_SCHEMAS / "_definitions.json").read_text())
    return Registry().with_resource(definitions["$id"], Resource.from_contents(definitions))


@cache
def crd_schema(kind: str, version: str) -> dict:
    crd = yaml.load((CRDS / CRD_FILE[kind]).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    found = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    assert found, f"KubeRay v1.7.0 does not serve {kind} {version}"
    return strict(found[0]["schema"]["openAPIV3Schema"])


def validate(obj: dict) -> None:
    group_version, kind = obj["apiVersion"], obj["kind"]
    if (group_version, kind) in CORE_SCHEMA:
        schema = json.loads((K8S_SCHEMAS / CORE_SCHEMA[group_version, kind]).read_text())
        jsonschema.Draft202012Validator(schema, registry=core_registry()).validate(obj)
    elif group_version.startswith("ray.io/") and kind in CRD_FILE:
        jsonschema.Draft7Validator(crd_schema(kind, group_version.split("/")[1])).validate(obj)
    else:
        pytest.fail(f"{group_version} {kind}: no shipped schema to validate it against")


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return render()


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def test_every_manifest_is_rendered_and_every_object_validates_against_its_schema(objects):
    assert sorted(ORDER) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "values.yaml")
    kinds = {o["kind"] for o in objects}
    assert {"Namespace", "PersistentVolumeClaim", "Job", "Deployment", "Service", "RayCluster", "RayJob"} <= kinds
    for obj in objects:
        validate(obj)


@pytest.mark.parametrize(
    "break_it, field",
    [
        (lambda o: o["spec"]["workerGroupSpecs"][0].update(maxReplica=3), "maxReplica"),
        (lambda o: o["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0].update(imagePullPolicy=7), "7"),
        (lambda o: o["spec"]["workerGroupSpecs"][1].pop("groupName"), "groupName"),
    ],
)
def test_the_crd_schema_catches_a_broken_raycluster(objects, break_it, field):
    cluster = json.loads(json.dumps(of_kind(objects, "RayCluster")[0]))
    break_it(cluster)
    with pytest.raises(jsonschema.ValidationError, match=field):
        validate(cluster)


def test_the_core_schema_catches_a_broken_deployment(objects):
    deployment = json.loads(json.dumps(of_kind(objects, "Deployment")[0]))
    deployment["spec"]["template"]["spec"]["containers"][0]["port"] = 5000
    with pytest.raises(jsonschema.ValidationError, match="port"):
        validate(deployment)


def test_a_missing_value_or_unknown_override_is_an_error_naming_the_key(tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text("namespace: facex\n")
    with pytest.raises(RenderError, match=r"storage.yaml: \$\{shared_storage_class\} has no value"):
        render(["storage.yaml"], load_values(values))
    with pytest.raises(RenderError, match="gpu_worker_max: not a key"):
        load_values(K8S / "values.yaml", ["gpu_worker_max=3"])


def test_the_command_line_prints_applyable_yaml_and_names_what_is_wrong(capsys):
    assert main(["raycluster.yaml", "--set", "gpu_workers_max=3"]) == 0
    (cluster,) = yaml.safe_load_all(capsys.readouterr().out)
    validate(cluster)
    assert {g["groupName"]: g["maxReplicas"] for g in cluster["spec"]["workerGroupSpecs"]}["gpu"] == 3
    assert main(["raycluster.yml"]) == 2
    assert "raycluster.yml: no such manifest" in capsys.readouterr().err


def test_autoscaling_bounds_come_from_the_values_file(objects):
    values = load_values(K8S / "values.yaml", ["gpu_workers_min=1", "gpu_workers_max=6"])
    rendered = of_kind(render(["raycluster.yaml"], values), "RayCluster")[0]
    groups = {g["groupName"]: g for g in rendered["spec"]["workerGroupSpecs"]}
    assert (groups["gpu"]["minReplicas"], groups["gpu"]["maxReplicas"]) == (1, 6)
    cluster = of_kind(objects, "RayCluster")[0]
    assert cluster["spec"]["enableInTreeAutoscaling"] is True
    for group in cluster["spec"]["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]


def containers(template: dict) -> list[dict]:
    return template["spec"]["containers"]


def test_images_are_the_dockerfiles_build_and_ray_matches_its_base(objects):
    cluster = of_kind(objects, "RayCluster")[0]["spec"]
    templates = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    for template in templates:
        ray_container = containers(template)[0]  # KubeRay runs Ray in the first container
        name, tag = ray_container["image"].rsplit("/", 1)[-1].split(":")
        version, variant = tag.rsplit("-", 1)
        assert (name, version) == ("facex", package_version()) and variant in dockerfile_variants()
    dockerfile = (REPO / "infra" / "docker" / "Dockerfile").read_text()
    assert cluster["rayVersion"] == re.search(r"^ARG RAY_VERSION=(\S+)$", dockerfile, re.M).group(1)
    mlflow = containers(of_kind(objects, "Deployment")[0]["spec"]["template"])[0]
    assert mlflow["image"] == f"facex-mlflow:{locked('mlflow')}"
    assert f"-t {mlflow['image']} " in (REPO / "infra" / "mlflow" / "Dockerfile").read_text()


def test_gpu_requests_fit_the_gpu_group_and_the_real_profile_fits_the_cluster(objects):
    groups = {g["groupName"]: g for g in of_kind(objects, "RayCluster")[0]["spec"]["workerGroupSpecs"]}
    ray_container = containers(groups["gpu"]["template"])[0]
    gpus = int(ray_container["resources"]["limits"]["nvidia.com/gpu"])
    assert int(ray_container["resources"]["requests"]["nvidia.com/gpu"]) == gpus >= 1
    assert "nvidia.com/gpu" not in containers(groups["cpu-decode"]["template"])[0]["resources"]["limits"]
    real = load_params(REPO / "params" / "celebvhq-sd15.yaml")
    capacity = gpus * groups["gpu"]["maxReplicas"]
    assert real.extract.actor_num_gpus <= gpus, "an extractor actor asks for more GPUs than a GPU node has"
    assert real.extract.num_actors * real.extract.actor_num_gpus <= capacity, "extract actors cannot all be placed"
    if real.compute.use_gpu:
        assert real.compute.num_workers <= capacity, "Ray Train workers exceed the GPU group's maximum size"
    cpu_group = containers(groups["cpu-decode"]["template"])[0]["resources"]["limits"]["cpu"]
    decode_cpus = real.extract.num_decoders * real.extract.decode_num_cpus
    assert decode_cpus <= float(cpu_group) * groups["cpu-decode"]["maxReplicas"]


def test_rayjobs_run_existing_entry_points_with_the_real_params_on_the_cluster(objects):
    workdir = re.search(r"^WORKDIR (\S+)$", (REPO / "infra" / "docker" / "Dockerfile").read_text(), re.M).group(1)
    cluster = of_kind(objects, "RayCluster")[0]
    gpu_group = next(g for g in cluster["spec"]["workerGroupSpecs"] if g["groupName"] == "gpu")
    gpus_per_node = int(containers(gpu_group["template"])[0]["resources"]["limits"]["nvidia.com/gpu"])
    jobs = {j["metadata"]["name"]: j for j in of_kind(objects, "RayJob")}
    real = load_params(REPO / "params" / "celebvhq-sd15.yaml")
    finetunes = {f"finetune-{task}" for task in real.train.specialist_steps}
    stages = {"extract", "train-generalist", "evaluate", "register", *finetunes}
    assert {n.removeprefix("facex-") for n in jobs} == stages
    for job in jobs.values():
        spec = job["spec"]
        assert spec["clusterSelector"] == {"ray.io/cluster": cluster["metadata"]["name"]}
        assert not spec.get("shutdownAfterJobFinishes", False)  # the cluster is shared by every job
        argv = shlex.split(spec["entrypoint"])
        assert argv[0] == "python"
        script = Path(argv[1])
        assert script.is_relative_to(workdir) and (REPO / script.relative_to(workdir)).is_file(), argv[1]
        params = Path(argv[argv.index("--params") + 1])
        assert (REPO / params.relative_to(workdir)) == REPO / "params" / "celebvhq-sd15.yaml"
        if script.name == "train.py":
            assert argv[2] == "generalist" or argv[2] in real.train.specialist_steps
        assert spec.get("entrypointNumGpus", 0) <= gpus_per_node, "the job's driver cannot be placed on a GPU node"
    copied = " ".join(s for s in dockerfile_stages((REPO / "infra/docker/Dockerfile").read_text())["facex"])
    assert "COPY --chown=ray:users pipelines ./pipelines" in copied and "params ./params" in copied


def test_shared_storage_holds_shards_models_checkpoints_and_the_params_weights_dir(objects):
    workdir = re.search(r"^WORKDIR (\S+)$", (REPO / "infra" / "docker" / "Dockerfile").read_text(), re.M).group(1)
    claim = of_kind(objects, "PersistentVolumeClaim")[0]
    name = claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]  # every Ray pod mounts it
    real = load_params(REPO / "params" / "celebvhq-sd15.yaml")
    in_image = {  # where the real profile's paths land when the params file sits in the image's WORKDIR
        Path(workdir) / Path(real.extract.out_dir).relative_to(REPO),
        Path(workdir) / Path(real.train.out_dir).relative_to(REPO),
        Path(workdir) / real.train.checkpoint_dir,  # Ray Train storage (relative to the repo)
        Path(workdir) / Path(real.evaluate.out_dir).relative_to(REPO),
        real.extract.input_dir,
        real.weights.dir,
    }
    cluster = of_kind(objects, "RayCluster")[0]["spec"]
    sub_paths = set()
    for template in [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]:
        spec = template["spec"]
        claims = {v["name"] for v in spec["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == name}
        mounts = [Path(m["mountPath"]) for m in containers(template)[0]["volumeMounts"] if m["name"] in claims]
        for path in in_image:
            assert any(Path(path).is_relative_to(m) for m in mounts), f"{path} is not on the shared volume"
        sub_paths |= {m["subPath"] for m in containers(template)[0]["volumeMounts"] if m["name"] in claims}
    loader = of_kind(objects, "Job")[0]["spec"]["template"]["spec"]
    assert loader["volumes"][0]["persistentVolumeClaim"]["claimName"] == name
    root = loader["containers"][0]["volumeMounts"][0]["mountPath"]
    script = " ".join(loader["containers"][0]["args"])
    for sub in sub_paths:  # the loader fills or creates (owned by the image's uid) every folder the pods mount
        assert f"{root}/{sub}" in script, f"load-shared.yaml neither fills nor creates {sub}/"
    writable = {m["subPath"] for m in containers(cluster["headGroupSpec"]["template"])[0]["volumeMounts"]
                if m["name"] == "shared" and not m.get("readOnly")}  # fmt: skip
    for sub in writable:
        assert f"{root}/{sub}" in script.split("chown", 1)[1], f"load-shared.yaml leaves {sub}/ unwritable for uid 1000"


def test_every_ray_pod_reaches_the_tracking_uri_of_the_real_params(objects):
    real = load_params(REPO / "params" / "celebvhq-sd15.yaml")
    host, port = re.match(r"http://([^:/]+):(\d+)", real.tracking.uri).groups()
    service = of_kind(objects, "Service")[0]
    namespace = service["metadata"]["namespace"]
    service_port = service["spec"]["ports"][0]["port"]
    cluster = of_kind(objects, "RayCluster")[0]["spec"]
    for template in [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]:
        ambassador = next(c for c in containers(template) if c["name"] == "mlflow-ambassador")
        listen, target = ambassador["args"]
        assert f"TCP-LISTEN:{port}," in listen and f"bind={host}" in listen
        assert target == f"TCP:{service['metadata']['name']}.{namespace}.svc.cluster.local:{service_port}"
    deployment = of_kind(objects, "Deployment")[0]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["type"] == "ClusterIP"  # reached through port-forward or an authenticating ingress
    args = containers(deployment["spec"]["template"])[0]["args"]
    assert args[args.index("--backend-store-uri") + 1] == "$(MLFLOW_BACKEND_STORE_URI)" and "--serve-artifacts" in args


def test_readme_recipe_names_real_manifests_the_schemas_operator_version_and_the_built_tags():
    readme = (REPO / "infra" / "README.md").read_text()
    named = set(re.findall(r"render\.py ((?:[\w-]+\.yaml ?)+)", readme))
    files = {f for group in named for f in group.split()} | set(re.findall(r"run ([\w-]+\.yaml)", readme))
    assert files and files <= set(ORDER), f"README names manifests that do not exist: {files - set(ORDER)}"
    operator = re.search(r"helm install kuberay-operator \S+ --version (\S+)", readme).group(1)
    assert CRDS.name == f"kuberay-v{operator}", "the operator the README installs is not the one whose CRDs we test"
    values = load_values()
    for variant in dockerfile_variants():
        tag = f"{values['version']}-{variant}"
        assert f"--build-arg VARIANT={variant} -t $REGISTRY/{values['image']}:{tag} ." in readme
    assert f"-t $REGISTRY/{values['mlflow_image']} infra/mlflow" in readme


def test_the_operators_own_checks_beyond_the_schema_pass(objects):
    """What KubeRay v1.7.0 rejects in code (controllers/ray/utils/validation.go), past the CRD schema."""
    dns1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    cluster = of_kind(objects, "RayCluster")[0]
    assert dns1035.match(cluster["metadata"]["name"]) and len(cluster["metadata"]["name"]) <= 53
    for group in cluster["spec"]["workerGroupSpecs"]:
        assert 0 <= group["minReplicas"] <= group["maxReplicas"], group["groupName"]
        assert containers(group["template"])
    for job in of_kind(objects, "RayJob"):
        spec = job["spec"]
        assert dns1035.match(job["metadata"]["name"]) and len(job["metadata"]["name"]) <= 53 - 6
        assert spec["clusterSelector"].get("ray.io/cluster"), "cluster name in ClusterSelector should not be empty"
        assert spec.get("submissionMode") != "SidecarMode", "ClusterSelector is not supported in SidecarMode"
        assert not spec.get("suspend") and not spec.get("backoffLimit"), "incompatible with ClusterSelector mode"

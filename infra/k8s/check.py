#!/usr/bin/env python3
"""Offline check of STORM's kustomize layout, for machines without kubectl or kustomize.

For every kustomization.yaml under infra/k8s it:
  1. checks that every resource and patch it lists exists, and that every YAML file in its folder is
     listed (a forgotten file is an error, not silently left out);
  2. renders it the way `kubectl kustomize` would for the features used here (namespace, labels,
     images, replicas, strategic-merge patches matched by kind and name); any other kustomization key is
     refused, so a feature this script does not understand cannot pass unchecked;
  3. checks references inside the rendered set: ConfigMaps and Secrets named by envFrom, secretKeyRef
     and volumes, the HPA's scale target, Service, PDB and workload selectors matching pod labels, and a
     StatefulSet's serviceName;
  4. writes the rendered manifests to OUT/<name>.yaml and validates them with
     `kubernetes-validate --strict -k VERSION`, and writes the Prometheus configuration carried in the
     storm-prometheus ConfigMap to OUT/prometheus-k8s.yml for promtool.

Usage: check.py [--kubernetes-version 1.31.0] [--out DIR] [ROOT]   (ROOT defaults to this folder)
Exit status: 0 when everything passed, 1 otherwise (each problem printed on one line).
"""

import argparse
import copy
import os
import subprocess
import sys
import tempfile

import yaml

ALLOWED_KEYS = {"apiVersion", "kind", "namespace", "labels", "resources", "patches", "images", "replicas"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume", "StorageClass",
                  "CustomResourceDefinition", "PriorityClass"}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}

problems = []


def problem(message):
    problems.append(message)
    print(f"check-k8s: {message}", file=sys.stderr)


def load_documents(path):
    with open(path, encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def merge(base, patch):
    """Strategic merge, enough for these manifests: maps merge key by key; lists of maps that carry a
    name (containers, ports, env, volumes) or a metadata.name (volumeClaimTemplates) merge item by item;
    any other list is replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        result = dict(base)
        for key, value in patch.items():
            result[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return result
    if isinstance(base, list) and isinstance(patch, list):
        def key_of(item):
            if not isinstance(item, dict):
                return None
            if "name" in item:
                return item["name"]
            return (item.get("metadata") or {}).get("name")
        if all(key_of(item) is not None for item in base + patch):
            result = [copy.deepcopy(item) for item in base]
            for item in patch:
                for index, existing in enumerate(result):
                    if key_of(existing) == key_of(item):
                        result[index] = merge(existing, item)
                        break
                else:
                    result.append(copy.deepcopy(item))
            return result
    return copy.deepcopy(patch)


def pod_specs(resource):
    spec = resource.get("spec") or {}
    template = spec.get("template") or {}
    if template:
        yield template.get("spec") or {}


def containers(resource):
    for pod in pod_specs(resource):
        for container in (pod.get("containers") or []) + (pod.get("initContainers") or []):
            yield container


def render(directory, seen):
    """Returns the rendered resources of the kustomization in `directory`."""
    directory = os.path.abspath(directory)
    if directory in seen:
        problem(f"{directory}: kustomization cycle")
        return []
    seen = seen | {directory}
    path = os.path.join(directory, "kustomization.yaml")
    if not os.path.isfile(path):
        problem(f"{directory}: listed as a resource but has no kustomization.yaml")
        return []
    documents = load_documents(path)
    if len(documents) != 1 or not isinstance(documents[0], dict):
        problem(f"{path}: expected one YAML mapping")
        return []
    kustomization = documents[0]
    for key in sorted(set(kustomization) - ALLOWED_KEYS):
        problem(f"{path}: key '{key}' is not understood by this checker (extend check.py or avoid it)")
    if kustomization.get("kind") != "Kustomization":
        problem(f"{path}: kind is not Kustomization")

    listed = set()
    resources = []
    for entry in kustomization.get("resources") or []:
        target = os.path.normpath(os.path.join(directory, entry))
        listed.add(target)
        if os.path.isdir(target):
            resources.extend(render(target, seen))
        elif os.path.isfile(target):
            for document in load_documents(target):
                document.setdefault("metadata", {})
                resources.append(document)
        else:
            problem(f"{path}: resource '{entry}' does not exist")

    for patch_entry in kustomization.get("patches") or []:
        if not isinstance(patch_entry, dict) or "path" not in patch_entry or set(patch_entry) - {"path"}:
            problem(f"{path}: only 'patches: - path: FILE' (strategic merge) is supported, found {patch_entry!r}")
            continue
        target = os.path.normpath(os.path.join(directory, patch_entry["path"]))
        listed.add(target)
        if not os.path.isfile(target):
            problem(f"{path}: patch '{patch_entry['path']}' does not exist")
            continue
        for patch in load_documents(target):
            kind, name = patch.get("kind"), (patch.get("metadata") or {}).get("name")
            matches = [index for index, resource in enumerate(resources)
                       if resource.get("kind") == kind and resource["metadata"].get("name") == name]
            if len(matches) != 1:
                problem(f"{target}: patch for {kind}/{name} matches {len(matches)} resources (expected 1)")
                continue
            resources[matches[0]] = merge(resources[matches[0]], patch)

    for replica in kustomization.get("replicas") or []:
        matches = [r for r in resources if r.get("kind") in WORKLOADS and r["metadata"].get("name") == replica.get("name")]
        if not matches:
            problem(f"{path}: replicas for '{replica.get('name')}' matches no workload")
        for resource in matches:
            resource.setdefault("spec", {})["replicas"] = replica.get("count")

    for image in kustomization.get("images") or []:
        found = False
        for resource in resources:
            for container in containers(resource):
                current = container.get("image", "")
                repository = current.rsplit(":", 1)[0] if ":" in current.rsplit("/", 1)[-1] else current
                if repository == image.get("name"):
                    found = True
                    new_name = image.get("newName", repository)
                    new_tag = image.get("newTag", current[len(repository) + 1:] if current != repository else "latest")
                    container["image"] = f"{new_name}:{new_tag}"
        if not found:
            problem(f"{path}: image '{image.get('name')}' is used by no container")

    for label_set in kustomization.get("labels") or []:
        for resource in resources:
            resource["metadata"].setdefault("labels", {}).update(label_set.get("pairs") or {})

    namespace = kustomization.get("namespace")
    if namespace:
        for resource in resources:
            if resource.get("kind") not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = namespace

    for name in sorted(os.listdir(directory)):
        full = os.path.join(directory, name)
        if name.endswith((".yaml", ".yml")) and name != "kustomization.yaml" and full not in listed:
            problem(f"{full}: not listed in {path} (as a resource or a patch)")
    return resources


def check_references(name, resources):
    """Names that must resolve inside the rendered set."""
    def exists(kind, resource_name):
        return any(r.get("kind") == kind and r["metadata"].get("name") == resource_name for r in resources)

    pod_labels = []
    for resource in resources:
        for pod in pod_specs(resource):
            labels = ((resource.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
            pod_labels.append(labels)
            described = f"{name}: {resource['kind']}/{resource['metadata'].get('name')}"
            selector = ((resource.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            if any(labels.get(k) != v for k, v in selector.items()):
                problem(f"{described}: selector {selector} does not match its pod labels {labels}")
            for container in (pod.get("containers") or []):
                for source in container.get("envFrom") or []:
                    for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                        reference = source.get(key)
                        if reference and not reference.get("optional") and not exists(kind, reference.get("name")):
                            problem(f"{described}: envFrom {kind} '{reference.get('name')}' does not exist")
                for variable in container.get("env") or []:
                    reference = (variable.get("valueFrom") or {}).get("secretKeyRef")
                    if reference:
                        secrets = [r for r in resources if r.get("kind") == "Secret" and r["metadata"].get("name") == reference.get("name")]
                        keys = set((secrets[0].get("stringData") or {}) | (secrets[0].get("data") or {})) if secrets else set()
                        if reference.get("key") not in keys:
                            problem(f"{described}: secretKeyRef {reference.get('name')}/{reference.get('key')} does not exist")
            for volume in pod.get("volumes") or []:
                if "configMap" in volume and not exists("ConfigMap", volume["configMap"].get("name")):
                    problem(f"{described}: volume ConfigMap '{volume['configMap'].get('name')}' does not exist")
            if resource.get("kind") == "StatefulSet":
                service = resource["spec"].get("serviceName")
                if not exists("Service", service):
                    problem(f"{described}: serviceName '{service}' is not a Service")
    for resource in resources:
        kind = resource.get("kind")
        described = f"{name}: {kind}/{resource['metadata'].get('name')}"
        if kind == "Service":
            selector = resource["spec"].get("selector") or {}
            if not any(all(labels.get(k) == v for k, v in selector.items()) for labels in pod_labels):
                problem(f"{described}: selector {selector} matches no pod template")
        if kind == "PodDisruptionBudget":
            selector = (resource["spec"].get("selector") or {}).get("matchLabels") or {}
            if not any(all(labels.get(k) == v for k, v in selector.items()) for labels in pod_labels):
                problem(f"{described}: selector {selector} matches no pod template")
        if kind == "HorizontalPodAutoscaler":
            target = resource["spec"].get("scaleTargetRef") or {}
            if not exists(target.get("kind"), target.get("name")):
                problem(f"{described}: scale target {target.get('kind')}/{target.get('name')} does not exist")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", nargs="?", default=os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--kubernetes-version", "-k", default="1.31.0")
    parser.add_argument("--out", help="where rendered manifests go (default: a temporary folder)")
    arguments = parser.parse_args()

    out = arguments.out or tempfile.mkdtemp(prefix="storm-k8s.")
    os.makedirs(out, exist_ok=True)
    kustomizations = []
    for directory, _, files in sorted(os.walk(arguments.root)):
        if "kustomization.yaml" in files:
            kustomizations.append(directory)
    if not kustomizations:
        problem(f"{arguments.root}: no kustomization.yaml found")

    rendered_files = []
    for directory in kustomizations:
        name = os.path.relpath(directory, arguments.root).replace(os.sep, "-")
        resources = render(directory, frozenset())
        check_references(name, resources)
        target = os.path.join(out, f"{name}.yaml")
        with open(target, "w", encoding="utf-8") as handle:
            yaml.safe_dump_all(resources, handle, sort_keys=False)
        rendered_files.append(target)
        print(f"check-k8s: {name}: {len(resources)} resources rendered to {target}")
        for resource in resources:
            if resource.get("kind") == "ConfigMap" and resource["metadata"].get("name") == "storm-prometheus":
                with open(os.path.join(out, "prometheus-k8s.yml"), "w", encoding="utf-8") as handle:
                    handle.write(resource["data"]["prometheus.yml"])

    if rendered_files:
        command = ["kubernetes-validate", "--strict", "--quiet", "-k", arguments.kubernetes_version] + rendered_files
        result = subprocess.run(command, capture_output=True, text=True)
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0 or "ERROR" in output:
            # Its tracebacks quote whole schemas: keep the lines that name the problem.
            lines = [line for line in output.splitlines() if line.startswith(("ERROR", "WARN"))] or output.splitlines()[-5:]
            problem(f"kubernetes-validate --strict -k {arguments.kubernetes_version} failed:\n" + "\n".join(line[:400] for line in lines))
        else:
            print(f"check-k8s: kubernetes-validate --strict -k {arguments.kubernetes_version}: {len(rendered_files)} rendered kustomizations valid")

    if problems:
        print(f"check-k8s: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

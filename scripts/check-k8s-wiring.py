"""Checks what a schema cannot: that deploy/kubernetes fits together.

Usage: check-k8s-wiring.py MANIFESTS_DIR RENDERED_YAML DOCKERFILE

RENDERED_YAML is `kubectl kustomize MANIFESTS_DIR`. Run by scripts/lint-deploy
with its venv's Python (PyYAML comes with kubernetes-validate). Every problem
is printed; the exit code is 1 if there is any.
"""

import os
import re
import sys

import yaml

PLACEHOLDER = "REPLACE-ME"

problems = []


def problem(message):
    problems.append(message)


def one(objects, kind):
    found = [o for o in objects if o.get("kind") == kind]
    if len(found) != 1:
        problem(f"expected one {kind} in the kustomize render, found {len(found)}")
        return None
    return found[0]


def under(path, mount):
    return path == mount or path.startswith(mount.rstrip("/") + "/")


def main(manifests_dir, rendered_path, dockerfile):
    with open(rendered_path) as f:
        rendered = [o for o in yaml.safe_load_all(f) if o]
    cronjob = one(rendered, "CronJob")
    configmap = one(rendered, "ConfigMap")
    pvc = one(rendered, "PersistentVolumeClaim")
    if not (cronjob and configmap and pvc):
        return
    with open(os.path.join(manifests_dir, "secret.example.yaml")) as f:
        secret = yaml.safe_load(f)

    # The Secret example holds a placeholder, never a key.
    for key, value in (secret.get("stringData") or {}).items():
        if PLACEHOLDER not in str(value):
            problem(f"secret.example.yaml: {key} must be a placeholder containing {PLACEHOLDER}")
    if secret.get("data"):
        problem("secret.example.yaml: use stringData with a placeholder, not data")

    # The ConfigMap holds exactly the files of pipelines/, unchanged.
    pipelines_dir = os.path.join(manifests_dir, "pipelines")
    files = sorted(os.listdir(pipelines_dir))
    data = configmap.get("data") or {}
    if sorted(data) != files:
        problem(f"ConfigMap {configmap['metadata']['name']} holds {sorted(data)}, pipelines/ has {files}")
    pipelines = {}
    for name in files:
        with open(os.path.join(pipelines_dir, name)) as f:
            text = f.read()
        if data.get(name) != text:
            problem(f"ConfigMap's {name} differs from pipelines/{name}")
        pipelines[name] = yaml.safe_load(text)

    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    containers = pod["containers"]
    if len(containers) != 1:
        problem("the CronJob should run one container")
        return
    container = containers[0]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = container.get("volumeMounts", [])

    # The volumes name the objects that exist.
    mount_of = {}
    for m in mounts:
        v = volumes.get(m["name"])
        if v is None:
            problem(f"volumeMount {m['name']} has no volume")
            continue
        mount_of[m["name"]] = m
        if "configMap" in v and v["configMap"]["name"] != configmap["metadata"]["name"]:
            problem(f"volume {m['name']} names ConfigMap {v['configMap']['name']}, "
                    f"the render has {configmap['metadata']['name']}")
        if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] != pvc["metadata"]["name"]:
            problem(f"volume {m['name']} names PVC {v['persistentVolumeClaim']['claimName']}, "
                    f"pvc.yaml has {pvc['metadata']['name']}")
        if "secret" in v:
            if v["secret"]["secretName"] != secret["metadata"]["name"]:
                problem(f"volume {m['name']} names Secret {v['secret']['secretName']}, "
                        f"secret.example.yaml has {secret['metadata']['name']}")
            for item in v["secret"].get("items", []):
                if item["key"] not in (secret.get("stringData") or {}):
                    problem(f"volume {m['name']} takes key {item['key']}, absent from secret.example.yaml")

    def files_of_secret_mounts():
        for name, m in mount_of.items():
            v = volumes[name]
            if "secret" in v:
                for item in v["secret"].get("items", []):
                    yield os.path.join(m["mountPath"], item["path"])

    writable = [m["mountPath"] for m in mounts if not m.get("readOnly")
                and "configMap" not in volumes.get(m["name"], {})
                and "secret" not in volumes.get(m["name"], {})]
    pipeline_mount = next((m["mountPath"] for name, m in mount_of.items()
                           if "configMap" in volumes[name]), None)
    env = {e["name"] for e in container.get("env", [])}

    # The container runs pipelines that the ConfigMap holds.
    args = container.get("args", [])
    ran = [a for a in args if a.endswith((".yaml", ".yml"))]
    if not ran:
        problem("the container's args name no pipeline file")
    for a in ran:
        if pipeline_mount is None or os.path.dirname(a) != pipeline_mount:
            problem(f"args name {a}, not a file of the pipeline ConfigMap's mount {pipeline_mount}")
        elif os.path.basename(a) not in pipelines:
            problem(f"args name {a}, but pipelines/ has no {os.path.basename(a)}")
    if "json" not in args:
        problem("the container should log JSON (--log-format json)")

    # Each pipeline reads its key from the mounted Secret, writes under a
    # writable mount, and finds its ${VAR}s in the container's env.
    key_files = set(files_of_secret_mounts())
    for name, p in pipelines.items():
        source = p.get("source", {})
        if "api_key" in source:
            problem(f"pipelines/{name}: use api_key_file (the mounted Secret), not api_key")
        elif source.get("api_key_file") not in key_files:
            problem(f"pipelines/{name}: api_key_file {source.get('api_key_file')} is not a mounted "
                    f"Secret file ({sorted(key_files)})")
        dest = p.get("destination", {})
        out = (dest.get("duckdb") or {}).get("path") or (dest.get("parquet") or {}).get("dir")
        if not out or not any(under(out, w) for w in writable):
            problem(f"pipelines/{name}: destination {out} is not under a writable mount ({writable})")
        for var in re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", yaml.safe_dump(p)):
            if var not in env:
                problem(f"pipelines/{name}: ${{{var}}} is not set in the container's env")

    # The pod runs as the image's user.
    with open(dockerfile) as f:
        users = re.findall(r"^USER\s+(\d+)", f.read(), re.MULTILINE)
    uid = pod.get("securityContext", {}).get("runAsUser")
    if not users or str(uid) != users[-1]:
        problem(f"runAsUser {uid} is not the Dockerfile's USER {users[-1] if users else None}")


if __name__ == "__main__":
    main(*sys.argv[1:])
    for p in problems:
        print(f"check-k8s-wiring: {p}", file=sys.stderr)
    sys.exit(1 if problems else 0)

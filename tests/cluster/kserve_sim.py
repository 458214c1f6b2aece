"""A stand-in for kubectl against a cluster running KServe in Knative mode, for the rollout tests.

`kustomize` runs the real kubectl. `apply -k` renders with it and stores the InferenceService; `get
inferenceservice -o json` answers the status KServe would report, `get revisions.serving.knative.dev NAME`
the revision. The controller's behaviour is KServe's, as read in its source (commit aaac4e294dae):
- ksvc_reconciler.go `createKnativeService`: with canaryTrafficPercent set and a rolled-out revision, one
  `latestRevision` target at the percent (tag latest) and, under 100 %, one on latestRolledoutRevision
  with the rest (tag prev); otherwise `latestRevision` at 100 %;
- inference_service_status.go `PropagateStatus`: the latest ready revision becomes latestRolledoutRevision
  once its `latestRevision` target has 100 % (the old one becomes previousRolledoutRevision);
- Knative: a spec whose pod template changed creates a revision; a `latestRevision` target routes to the
  latest READY revision; a revision whose storageUri is listed in `never_ready` never becomes ready.
Status lags: after an apply, the next `stale_reads` reads still return the status from before it, with
Ready True (what a `kubectl wait --for=condition=Ready` would have accepted; kserve/kserve#6081).
Every call is appended to `calls`; every reconciled traffic block to `traffic-log` (JSON lines).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

STATE = "state.json"


def load(log: Path) -> dict[str, Any]:
    path = log / STATE
    if path.is_file():
        state: dict[str, Any] = json.loads(path.read_text())
        return state
    return {"revisions": {}, "status": {}, "desired": None, "stale_reads": 0, "never_ready": [], "config": {}}


def save(log: Path, state: dict[str, Any]) -> None:
    (log / STATE).write_text(json.dumps(state))


def template(isvc: dict[str, Any]) -> dict[str, Any]:
    """The Knative revision template KServe builds from the predictor spec (what makes a new revision)."""
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    return {
        "containers": [
            {"name": "kserve-container", "image": model.get("image"), "env": model.get("env", [])},
            *[
                {"name": c["name"], "image": c.get("image"), "env": c.get("env", [])}
                for c in predictor.get("containers", [])
            ],
        ],
        "initContainers": [{"name": "storage-initializer", "args": [model["storageUri"], "/mnt/models"]}],
    }


def reconcile(state: dict[str, Any], log: Path) -> None:
    desired = state["desired"]
    status = state["status"]
    revisions = state["revisions"]
    spec = template(desired)
    latest = status.get("latestCreatedRevision")
    if latest is None or revisions[latest]["spec"] != spec:
        name = f"churn-predictor-{len(revisions) + 1:05d}"
        revisions[name] = {"metadata": {"name": name}, "spec": spec}
        status["latestCreatedRevision"] = name
        if desired["spec"]["predictor"]["model"]["storageUri"] not in state["never_ready"]:
            status["latestReadyRevision"] = name
    ready = status.get("latestReadyRevision")
    percent = desired["spec"]["predictor"].get("canaryTrafficPercent")
    rolled_out = status.get("latestRolledoutRevision")
    if percent is not None and rolled_out:
        traffic = [{"tag": "latest", "latestRevision": True, "percent": percent, "revisionName": ready}]
        if percent < 100:
            traffic.append(
                {"tag": "prev", "latestRevision": False, "percent": 100 - percent, "revisionName": rolled_out}
            )
    else:
        traffic = [{"tag": "latest", "latestRevision": True, "percent": 100, "revisionName": ready}]
    for target in traffic:
        promoted = target["revisionName"] == ready and target["latestRevision"] and target["percent"] == 100
        if promoted and rolled_out != ready:
            status["previousRolledoutRevision"] = rolled_out
            status["latestRolledoutRevision"] = ready
    status["traffic"] = traffic
    with (log / "traffic-log").open("a") as handle:
        handle.write(json.dumps(traffic) + "\n")


def document(state: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "churn", "generation": 7},
        "spec": state["desired"]["spec"],
        "status": {
            "observedGeneration": 7,
            "conditions": [{"type": "Ready", "status": "True"}],
            "components": {"predictor": status},
        },
    }


def get(state: dict[str, Any], log: Path, args: list[str]) -> int:
    kind, name = args[0], args[1]
    output = args[args.index("--output") + 1]
    if state["desired"] is None:
        print(f'Error from server (NotFound): {kind} "{name}" not found', file=sys.stderr)
        return 1
    if kind.startswith("revisions"):
        revision = state["revisions"].get(name)
        if revision is None:
            return 1
        print(json.dumps(revision))
        return 0
    if output.startswith("jsonpath="):
        predictor = state["desired"]["spec"]["predictor"]
        print(predictor["containers"][0]["image"] + "\n" + predictor["model"].get("image", ""))
        return 0
    if state["stale_reads"] > 0:
        state["stale_reads"] -= 1
        print(json.dumps(document(state, state["stale_status"])))
        return 0
    reconcile(state, log)
    print(json.dumps(document(state, state["status"])))
    return 0


def apply(state: dict[str, Any], real: str, directory: str) -> int:
    rendered = subprocess.run([real, "kustomize", directory], capture_output=True, text=True, check=True)
    import yaml

    (isvc,) = [d for d in yaml.safe_load_all(rendered.stdout) if d and d.get("kind") == "InferenceService"]
    state["stale_status"] = copy.deepcopy(state["status"])
    state["desired"] = isvc
    state["stale_reads"] = int(state["config"].get("stale_reads", 2))
    return int(state["config"].get("apply_exit", 0))


def main(argv: list[str]) -> int:
    log, real = Path(argv[0]), argv[1]
    args = argv[2:]
    if args[0] == "kustomize":
        return subprocess.run([real, *args], check=False).returncode
    with (log / "calls").open("a") as handle:
        handle.write(" ".join(args) + "\n")
    while args and args[0] in ("--context", "--namespace"):
        args = args[2:]
    state = load(log)
    try:
        if args[0] == "apply":
            return apply(state, real, args[-1])
        if args[0] == "get":
            return get(state, log, args[1:])
        print(f"kserve_sim: unsupported {args}", file=sys.stderr)
        return 2
    finally:
        save(log, state)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

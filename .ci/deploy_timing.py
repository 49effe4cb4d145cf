"""Checks that deploy/kubernetes/'s Deployment and ConfigMap agree on shutdown timing.

Kubernetes runs preStop, then sends SIGTERM, then SIGKILLs at terminationGracePeriodSeconds
(counted from the start of preStop). steward's shutdown.timeout must fit in what is left after
preStop, shutdown.orchestrator_grace must say exactly that, and the preStop pause must match
shutdown.drain_delay. Writes the ConfigMap's steward.toml to the path given, for check-config.
"""

import re
import sys
import tomllib
from pathlib import Path

import yaml

UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}


def seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    if not match:
        sys.exit(f"cannot read duration {text!r} (expected e.g. 5s, 500ms)")
    return int(match[1]) * UNITS[match[2]]


def main() -> None:
    folder, out = Path(sys.argv[1]), Path(sys.argv[2])
    docs = [d for f in sorted(folder.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    by_kind = {d["kind"]: d for d in docs if d}
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == "steward")
    config_text = by_kind["ConfigMap"]["data"]["steward.toml"]
    out.write_text(config_text)
    shutdown = tomllib.loads(config_text)["shutdown"]

    grace = pod["terminationGracePeriodSeconds"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    timeout = seconds(shutdown["timeout"])
    drain = seconds(shutdown["drain_delay"])
    orchestrator = seconds(shutdown["orchestrator_grace"])
    phases = drain + sum(seconds(shutdown[k]) for k in ("http_timeout", "workers_timeout", "stores_timeout"))

    problems = []
    if pre_stop != drain:
        problems.append(f"preStop sleep {pre_stop}s != shutdown.drain_delay {drain}s")
    if orchestrator != grace - pre_stop:
        problems.append(
            f"shutdown.orchestrator_grace {orchestrator}s != terminationGracePeriodSeconds "
            f"{grace}s - preStop {pre_stop}s"
        )
    if not phases <= timeout < orchestrator:
        problems.append(f"need phases {phases}s <= shutdown.timeout {timeout}s < orchestrator_grace {orchestrator}s")
    if problems:
        sys.exit("deploy/kubernetes timing: " + "; ".join(problems))
    print(f"timing: preStop {pre_stop}s + shutdown.timeout {timeout}s < grace {grace}s (phases {phases}s)")


main()

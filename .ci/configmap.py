"""Writes the steward.toml of deploy/kubernetes/configmap.yaml to the path given, so that
.ci/deploy-check can run `steward check-config` and `steward doctor --manifest` on it."""

import sys
from pathlib import Path

import yaml

folder, out = Path(sys.argv[1]), Path(sys.argv[2])
docs = [d for f in sorted(folder.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
config_map = next(d for d in docs if d and d["kind"] == "ConfigMap")
out.write_text(config_map["data"]["steward.toml"])

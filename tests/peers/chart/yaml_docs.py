"""Prints the YAML documents of a file as one JSON list (tests/deploy.rs reads the
Traefik and Envoy examples with it)."""

import json
import sys

import yaml

with open(sys.argv[1], encoding="utf-8") as f:
    json.dump([d for d in yaml.safe_load_all(f) if d is not None], sys.stdout)

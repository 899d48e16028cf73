"""Parses an Envoy bootstrap (deploy/envoy/envoy.yaml) strictly against Envoy's own API
definitions (PyPI envoy-data-plane: the data-plane-api protos as Python classes): an
unknown field, a wrong type or an unknown enum value fails, in every typed_config too.
Envoy itself is not packaged for Debian; tests/deploy.rs runs this instead of
`envoy --mode validate`.

Usage: envoy_check.py FILE. Prints {"error": null | "..."} and, when it parses, the
parsed configuration in Envoy's canonical JSON form ("config").
"""

import importlib
import json
import sys

import yaml


def type_urls(node):
    if isinstance(node, dict):
        if "@type" in node:
            yield node["@type"]
        for value in node.values():
            yield from type_urls(value)
    elif isinstance(node, list):
        for value in node:
            yield from type_urls(value)


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    try:
        # Register every message type the file names in a typed_config.
        for url in set(type_urls(doc)):
            package = url.rsplit("/", 1)[1].rsplit(".", 1)[0]
            importlib.import_module(f"envoy_data_plane.{package}")
        from envoy_data_plane.envoy.config.bootstrap.v3 import Bootstrap

        config = Bootstrap.from_dict(doc).to_dict()
        json.dump({"error": None, "config": config}, sys.stdout)
    except (KeyError, ValueError, TypeError, ImportError) as e:
        json.dump({"error": f"{type(e).__name__}: {e}"}, sys.stdout)


if __name__ == "__main__":
    main()

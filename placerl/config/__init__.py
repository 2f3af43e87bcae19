"""Typed configs: YAML files plus ``dotted.key=value`` overrides, validated with clear errors."""

from placerl.config.loader import dump_config, load_config, parse_overrides

__all__ = ["dump_config", "load_config", "parse_overrides"]

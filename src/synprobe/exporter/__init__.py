"""A blackbox_exporter-compatible `/probe` endpoint answered by half-open checks.

    config = build_config(toml_mapping, probe_allow=["198.18.0.0/15"])
    exporter = Exporter(config)
    app.add_routes(probe_routes(exporter))      # on the watch service's --metrics listener
    exporter.reload(build_config(...))          # on SIGHUP; raises and keeps the old on error

Needs aiohttp (the watch service's HTTP server). See docs/exporter.md.
"""

from synprobe.exporter.config import ExporterConfig, Module, build_config
from synprobe.exporter.service import Exporter, probe_routes

__all__ = ["Exporter", "ExporterConfig", "Module", "build_config", "probe_routes"]

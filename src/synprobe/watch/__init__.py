"""`synprobe watch`: a long-running health-check service (rise/fall, events, Prometheus).

The library object is `synprobe.Watcher`; the HTTP app (`/metrics`, `/status`, and extension
routes such as `/probe`) is `synprobe.watch.http.build_app`. docs/watch.md describes it all.
"""

from synprobe.watch.config import ConfigError, Settings, WatchConfig, WatchTarget, load_config
from synprobe.watch.watcher import Watcher

__all__ = ["ConfigError", "Settings", "WatchConfig", "WatchTarget", "Watcher", "load_config"]

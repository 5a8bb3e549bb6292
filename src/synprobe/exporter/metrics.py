"""A probe's answer in the Prometheus text format: blackbox_exporter's TCP prober metrics, with
their names and meanings, then synprobe's own.

Each request gets its own freshly rendered answer, as blackbox_exporter builds a registry per
request: one probe's metrics never leak into another's. The text is formatted directly (a pure
function, outcome in, text out); a prometheus-client registry per request would cost more and
add nothing for a dozen gauges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from synprobe.exporter.probing import Outcome
from synprobe.model import State

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(slots=True)
class ProbeReport:
    outcome: Outcome
    duration: float  # seconds, the whole request's probe including the lookup
    dns_lookup_time: float
    ip_protocol: int = 0  # 4 or 6; 0 when no address was chosen
    ip_addr_hash: int = 0
    counted: bool = False  # a loss-measuring module (count = N)


def _value(v: float) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    return repr(float(v))


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def gauge(self, name: str, help_text: str, value: float,
              labels: dict[str, str] | None = None) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} gauge")
        self.sample(name, value, labels)

    def family(self, name: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} gauge")

    def sample(self, name: str, value: float, labels: dict[str, str] | None = None) -> None:
        if labels:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{text}}} {_value(value)}")
        else:
            self.lines.append(f"{name} {_value(value)}")


def render(report: ProbeReport) -> str:
    out = report.outcome
    w = _Writer()
    # blackbox_exporter's TCP prober, same names, same help, same meanings.
    w.gauge("probe_dns_lookup_time_seconds",
            "Returns the time taken for probe dns lookup in seconds", report.dns_lookup_time)
    w.gauge("probe_duration_seconds",
            "Returns how long the probe took to complete in seconds", report.duration)
    w.gauge("probe_failed_due_to_regex", "Indicates if probe failed due to regex", 0)
    w.gauge("probe_ip_addr_hash",
            "Specifies the hash of IP address. It's useful to detect if the IP address changes.",
            report.ip_addr_hash)
    w.gauge("probe_ip_protocol", "Specifies whether probe ip protocol is IP4 or IP6",
            report.ip_protocol)
    w.gauge("probe_success", "Displays whether or not the probe was a success", out.success)
    # synprobe's own.
    w.family("probe_synprobe_state",
             "The half-open check's verdict, one series per state (1 for the verdict)")
    for state in State:
        w.sample("probe_synprobe_state", out.state is state, {"state": state.value})
    w.gauge("probe_synprobe_info", "The verdict's evidence and the engine that found it", 1,
            {"state": out.state.value if out.state else "unresolved", "reason": out.reason,
             "engine": out.engine})
    w.gauge("probe_synprobe_attempts", "SYNs sent for this probe", out.attempts)
    if out.rtt is not None:
        w.gauge("probe_synprobe_rtt_seconds",
                "Seconds from the answered SYN to its answer (SYN-ACK or RST)", out.rtt)
    if report.counted:
        w.gauge("probe_synprobe_sent", "SYNs sent to measure loss", out.sent)
        w.gauge("probe_synprobe_received", "SYNs the target answered (SYN-ACK or RST)",
                out.received)
        w.gauge("probe_synprobe_loss_ratio", "Share of SYNs sent that got no answer",
                1.0 - out.received / out.sent if out.sent else 1.0)
        if out.rtts:
            w.gauge("probe_synprobe_rtt_min_seconds", "Smallest RTT of the answered SYNs",
                    min(out.rtts))
            w.gauge("probe_synprobe_rtt_avg_seconds", "Mean RTT of the answered SYNs",
                    sum(out.rtts) / len(out.rtts))
            w.gauge("probe_synprobe_rtt_max_seconds", "Largest RTT of the answered SYNs",
                    max(out.rtts))
    return "\n".join(w.lines) + "\n"

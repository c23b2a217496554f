"""Prometheus text endpoint: the agent's numbers, read fresh at every scrape."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from edge.agent import Agent


class _AgentCollector(Collector):
    def __init__(self, agent: Agent) -> None:
        self.agent = agent

    def collect(self) -> Iterator[Any]:
        labels = ["site", "gateway"]
        ids = [self.agent.cfg.site, self.agent.cfg.gateway]
        for name, value in self.agent.metrics().items():
            g = GaugeMetricFamily(f"wuye_edge_{name}", name.replace("_", " "), labels=labels)
            g.add_metric(ids, float(value))
            yield g
        for key in ("utilisation", "transactions_total", "failures_total"):
            g = GaugeMetricFamily(f"wuye_edge_bus_{key}", f"bus {key}", labels=[*labels, "bus"])
            for bus, m in self.agent.bus_metrics().items():
                g.add_metric([*ids, bus], float(m[key]))
            yield g
        g = GaugeMetricFamily(
            "wuye_edge_device_online",
            "1 online, 0 offline or unknown",
            labels=[*labels, "device", "bus"],
        )
        for d in self.agent.devices.values():
            g.add_metric([*ids, d.id, d.cfg.bus], float(d.state.value == "online"))
        yield g


def serve_metrics(agent: Agent, port: int, host: str = "127.0.0.1") -> Any:
    """Start the /metrics endpoint on its own thread; returns the server (``.shutdown()``)."""
    registry = CollectorRegistry()
    registry.register(_AgentCollector(agent))
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server

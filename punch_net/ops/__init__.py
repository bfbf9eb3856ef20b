"""Operating a node: the control socket, Prometheus metrics, the web console."""

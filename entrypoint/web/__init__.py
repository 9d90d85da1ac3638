"""The HTTP face (CONTRACT §10): JSON API, Server-Sent Events, Prometheus metrics and the
dashboard. Its own process, a client of the control socket; needs `entrypoint[web]`.
The runner never imports this package."""

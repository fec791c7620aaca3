"""The one-machine lab: a client, two LB hosts and three Kubernetes nodes in network
namespaces on one LAN bridge (198.18.0.0/24, fd00:198:18::/64), for `make demo` and the
end-to-end tests. `appliance lab up|down|status`; docs/lab.md draws it."""

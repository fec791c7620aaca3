"""The lab's stand-in Kubernetes node: what it programs (pure), and the agent for real in
network namespaces (root)."""

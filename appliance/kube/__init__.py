"""The Kubernetes API: the client, status write-back, Events, the writer's Lease, kubeconfigs."""

"""Kubernetes: the API server's pods and nodes, and pods as job records."""

module k8s-offline.lab/runc

go 1.24.0

require github.com/opencontainers/runc v1.4.3

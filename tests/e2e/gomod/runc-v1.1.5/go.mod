module k8s-offline.lab/runc

go 1.16

require github.com/opencontainers/runc v1.1.5

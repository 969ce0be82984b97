module k8s-offline.lab/containerd

go 1.17

require github.com/containerd/containerd v1.6.20

// containerd v1.6.20's own replace lines (replace lines apply only in the main module)
replace (
	github.com/gogo/googleapis => github.com/gogo/googleapis v1.3.2
	github.com/urfave/cli => github.com/urfave/cli v1.22.1
	google.golang.org/genproto => google.golang.org/genproto v0.0.0-20200224152610-e50cd9704f63
)

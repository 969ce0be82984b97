module k8s-offline.lab/cni-plugins

go 1.12

// CNI plugins v0.7.5 has no go.mod (Godeps era). Its Godeps.json pins commits; where the proxy
// serves that commit's release it is used, otherwise the nearest release the proxy serves.
require (
	github.com/alexflint/go-filemutex v1.1.0
	github.com/containernetworking/cni v0.6.0
	github.com/containernetworking/plugins v0.7.5
	github.com/coreos/go-iptables v0.2.0
	github.com/j-keck/arping v1.0.2
	github.com/mattn/go-shellwords v1.0.3 // indirect
	github.com/vishvananda/netlink v1.0.0
	github.com/vishvananda/netns v0.0.0-20171111001504-be1fbeda1936
	golang.org/x/sys v0.0.0-20190209173611-3b5209105503
)

// +build tools

// Package lab pins, for `go mod tidy`, the packages the lab builds from etcd v3.3.15
// (github.com/coreos/etcd and github.com/coreos/etcd/etcdctl are main packages: these are what
// they import).
package lab

import (
	_ "github.com/coreos/etcd/etcdctl/ctlv2"
	_ "github.com/coreos/etcd/etcdctl/ctlv3"
	_ "github.com/coreos/etcd/etcdmain"
)

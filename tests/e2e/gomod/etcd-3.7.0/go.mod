module k8s-offline.lab/etcd

go 1.26

require go.etcd.io/etcd/server/v3 v3.7.0
require go.etcd.io/etcd/etcdctl/v3 v3.7.0

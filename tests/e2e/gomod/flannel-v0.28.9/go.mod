module k8s-offline.lab/flannel

go 1.25.9

require github.com/flannel-io/flannel v0.28.9

// lab: the proxy here does not serve tencentcloud-sdk-go/tencentcloud/vpc v1.3.149 (nor v1.3.148,
// v1.3.150); v1.3.22 is flannel v0.28.0's pin. Only flannel's tencentvpc backend imports it (the
// lab runs vxlan).
replace github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc => github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc v1.3.22

module k8s-offline.lab/coredns

go 1.12

require github.com/coredns/coredns v1.6.2

// CoreDNS v1.6.2's own replace line (replace lines apply only in the main module)
replace github.com/miekg/dns v1.1.3 => github.com/miekg/dns v1.1.15

replace github.com/census-instrumentation/opencensus-proto => github.com/census-instrumentation/opencensus-proto v0.2.1 // lab: the proxy here does not serve v0.1.0-0.20181214143942-ba49f56771b8

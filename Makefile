# k8s-offline: the main job is `make bundle`, the tests are `make test`.
PYTHON ?= python3
PY36 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.6*/bin/python3) $(shell command -v python3.6 2>/dev/null))
BUNDLE_ARGS ?=

.PHONY: bundle test lint unit e2e e2e-prepare bench clean

bundle:
	$(PYTHON) k8s_offline.py bundle $(BUNDLE_ARGS)

# The fast suite: stdlib/3.6 checks, then every test but the air-gap lab.
test: lint unit

lint:
	$(PYTHON) -c "import sys, vermin; sys.argv[0] = 'vermin'; sys.exit(vermin.main())" --no-tips --violations -t=3.6- k8s_offline.py
	$(PYTHON) -S k8s_offline.py --help >/dev/null
	@if [ -n "$(PY36)" ]; then echo "$(PY36) -S k8s_offline.py verify --help"; \
	  $(PY36) -S k8s_offline.py verify --help >/dev/null; \
	else echo "*** WARNING: no Python 3.6 on this machine: the 3.6 runtime checks (python3.6 -S"; \
	  echo "*** k8s_offline.py verify --help, the tests that run 3.6) do not run; vermin -t=3.6-"; \
	  echo "*** is the ONLY check of Python 3.6 compatibility here. Install one (pyenv 3.6.x)."; fi

unit:
	$(PYTHON) -m pytest tests -q --ignore=tests/e2e

# The air-gap lab: real kubeadm nodes on an internal Docker network.
# e2e-prepare does the slow, cached part alone (the Go builds of tests/e2e/gomod/builds.json:
# Kubernetes v1.16.0, CoreDNS, etcd, CNI plugins, crictl; flanneld; node images; the bare-host
# archive; the current release v1.37.2 with containerd 2.x, flannel v0.28 and its node image).
# `make e2e` runs every scenario; `make e2e SCENARIO=seed` (or containerd, ha, daytwo, stick,
# bare, cluster, current) runs one alone.
E2E_SCENARIOS = seed containerd ha daytwo stick bare cluster current
SCENARIO ?=
e2e-prepare:
	$(PYTHON) -m tests.e2e.upstream --prepare
	$(PYTHON) -m tests.e2e.nodes --image
	$(PYTHON) -m tests.e2e.bare --archive --image
	$(PYTHON) -m tests.e2e.current --prepare --image

e2e:
	$(PYTHON) -m pytest -q -s $(addprefix tests/e2e/test_,$(addsuffix .py,$(or $(SCENARIO),$(E2E_SCENARIOS))))

bench:
	$(PYTHON) tests/bench/bench_bundle.py

clean:
	rm -rf bundle/*.tar bundle/*.partial-* .pytest_cache

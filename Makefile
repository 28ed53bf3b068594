# Two entry points: `make demo` runs the operator end to end on a local control plane and
# the provider simulator; `make test` runs formatting, lints and every test.
SHELL := /bin/bash
CARGO ?= cargo

.PHONY: demo test fmt-check clippy crd controlplane

demo:
	hack/demo.sh

test: fmt-check clippy
	hack/with-controlplane.sh $(CARGO) test --locked --all-targets

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --locked --all-targets -- -D warnings

# Regenerates the committed CRD files from the Rust types.
crd:
	$(CARGO) run --quiet --locked -- crd > crds/ishostingvps.yaml
	cp crds/ishostingvps.yaml charts/ishosting-operator/crds/ishostingvps.yaml

# Builds kube-apiserver, etcd and kubectl into the cache.
controlplane:
	hack/controlplane-build.sh

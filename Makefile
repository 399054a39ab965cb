GO      ?= go
LDFLAGS := -s -w
export GOFLAGS := -buildvcs=false

.PHONY: all build deps test vet demo bench clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/branchbox ./appliance/cmd/branchbox
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/amtsim ./tests/amtsim/cmd/amtsim

deps:
	@sh scripts/deps.sh

vet:
	@unformatted="$$(gofmt -l $$(git ls-files '*.go'))"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

# Every test: unit, fuzz seed corpora, end-to-end in network namespaces.
test: deps build vet
	BRANCHBOX_BIN=$(CURDIR)/bin/branchbox AMTSIM_BIN=$(CURDIR)/bin/amtsim $(GO) test -count=1 -timeout 45m ./...

demo: deps build
	sh scripts/demo.sh

bench: build
	@sh scripts/deps.sh bench
	sh scripts/bench.sh

clean:
	rm -rf bin image/out

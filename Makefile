GO      ?= go
LDFLAGS := -s -w
export GOFLAGS := -buildvcs=false

.PHONY: all build deps test vet demo bench clean image vm config-disk

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/branchbox ./appliance/cmd/branchbox
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/amtsim ./tests/amtsim/cmd/amtsim
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/branchbox-agent ./appliance/cmd/branchbox-agent

deps:
	@sh scripts/deps.sh

vet:
	@unformatted="$$(gofmt -l $$(git ls-files '*.go'))"; \
	if [ -n "$$unformatted" ]; then echo "gofmt needed:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

# Every test: unit, fuzz seed corpora, end-to-end in network namespaces.
# The VM boot tests (image/vmtest) boot the image that `image` builds.
test: deps build vet image
	BRANCHBOX_BIN=$(CURDIR)/bin/branchbox AMTSIM_BIN=$(CURDIR)/bin/amtsim BRANCHBOX_IMAGE_DIR=$(CURDIR)/image/out $(GO) test -count=1 -timeout 45m ./...

demo: deps build
	sh scripts/demo.sh

bench: build
	@sh scripts/deps.sh bench
	sh scripts/bench.sh

# The bootable appliance: image/out/vmlinuz (and vmlinux) + initramfs.cpio.gz
# (and initramfs.cpio.lz4).
image:
	@sh scripts/deps.sh
	@sh image/build.sh

# image/out/config.img: an ext4 disk with branchbox.yaml, the files it names,
# NETWORK (optional) as network.conf, and branchbox-data/ for persistence.
config-disk:
	@[ -n "$(CONFIG)" ] || { echo "usage: make config-disk CONFIG=file.yaml [NETWORK=network.conf]"; exit 2; }
	$(GO) run ./image/cmd/configdisk --config "$(CONFIG)" $(if $(NETWORK),--network "$(NETWORK)") --out image/out/config.img

# Boots the image in QEMU with a tap network in a namespace (image/vm.sh).
vm: image
	@sh image/vm.sh

clean:
	rm -rf bin image/out

# STORM: build, install, run, test.
#
#   make install [PREFIX=/usr/local] [DESTDIR=]   release binaries (stormd with its web files bundle), man pages, shell completions, systemd units
#   make run                                      ./scripts/run (stormd on 127.0.0.1:8080)
#   make test                                     ./scripts/test (the whole suite, as CI runs it)
#   make check-ops                                ./scripts/check-ops (deployment files, offline)
#   make uninstall [PREFIX=...]
#
# The installed units run $(PREFIX)/bin/stormd: ExecStart is rewritten on install.

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
MANDIR ?= $(PREFIX)/share/man
UNITDIR ?= $(PREFIX)/lib/systemd/system
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/site-functions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
SWIFT ?= swift
SWIFT_FLAGS ?=

PROGRAMS := stormd stormctl stormtop
# stormd's web page and storm.js (Sources/StormWeb/Resources): SwiftPM's resource bundle, which stormd
# looks for next to its binary.
WEB_BUNDLE := storm_StormWeb.resources
INSTALL ?= install

.PHONY: all build install uninstall run test check-ops

all: build

build:
	@for program in $(PROGRAMS); do \
		$(SWIFT) build -c release $(SWIFT_FLAGS) --product $$program || exit 1; \
	done

install: build
	@bin_path="$$($(SWIFT) build -c release $(SWIFT_FLAGS) --show-bin-path)"; \
	$(INSTALL) -d "$(DESTDIR)$(BINDIR)" && \
	for program in $(PROGRAMS); do \
		$(INSTALL) -m 0755 "$$bin_path/$$program" "$(DESTDIR)$(BINDIR)/$$program" || exit 1; \
	done; \
	rm -rf "$(DESTDIR)$(BINDIR)/$(WEB_BUNDLE)" && \
	cp -R "$$bin_path/$(WEB_BUNDLE)" "$(DESTDIR)$(BINDIR)/$(WEB_BUNDLE)" && \
	chmod -R u=rwX,go=rX "$(DESTDIR)$(BINDIR)/$(WEB_BUNDLE)"
	@for section in 1 5 8; do \
		for page in man/*.$$section; do \
			[ -f "$$page" ] || continue; \
			$(INSTALL) -d "$(DESTDIR)$(MANDIR)/man$$section" && \
			$(INSTALL) -m 0644 "$$page" "$(DESTDIR)$(MANDIR)/man$$section/" || exit 1; \
		done; \
	done
	@bin_path="$$($(SWIFT) build -c release $(SWIFT_FLAGS) --show-bin-path)"; \
	$(INSTALL) -d "$(DESTDIR)$(BASHCOMPDIR)" "$(DESTDIR)$(ZSHCOMPDIR)" "$(DESTDIR)$(FISHCOMPDIR)" && \
	"$$bin_path/stormctl" completion bash > "$(DESTDIR)$(BASHCOMPDIR)/stormctl" && \
	"$$bin_path/stormctl" completion zsh > "$(DESTDIR)$(ZSHCOMPDIR)/_stormctl" && \
	"$$bin_path/stormctl" completion fish > "$(DESTDIR)$(FISHCOMPDIR)/stormctl.fish" && \
	chmod 0644 "$(DESTDIR)$(BASHCOMPDIR)/stormctl" "$(DESTDIR)$(ZSHCOMPDIR)/_stormctl" "$(DESTDIR)$(FISHCOMPDIR)/stormctl.fish"
	@$(INSTALL) -d "$(DESTDIR)$(UNITDIR)"
	@for unit in infra/systemd/*.service; do \
		sed 's|^ExecStart=/usr/local/bin/|ExecStart=$(BINDIR)/|' "$$unit" > "$(DESTDIR)$(UNITDIR)/$$(basename "$$unit")" && \
		chmod 0644 "$(DESTDIR)$(UNITDIR)/$$(basename "$$unit")" || exit 1; \
	done
	@echo "installed $(PROGRAMS) and $(WEB_BUNDLE) to $(DESTDIR)$(BINDIR), man pages to $(DESTDIR)$(MANDIR), units to $(DESTDIR)$(UNITDIR)"
	@echo "then: systemctl daemon-reload && systemctl enable --now stormd (settings in /etc/storm/stormd.env)"

uninstall:
	rm -f $(addprefix "$(DESTDIR)$(BINDIR)/,$(addsuffix ",$(PROGRAMS)))
	rm -rf "$(DESTDIR)$(BINDIR)/$(WEB_BUNDLE)"
	rm -f "$(DESTDIR)$(MANDIR)/man1/stormctl.1" "$(DESTDIR)$(MANDIR)/man1/stormtop.1" \
		"$(DESTDIR)$(MANDIR)/man5/storm.conf.5" "$(DESTDIR)$(MANDIR)/man8/stormd.8"
	rm -f "$(DESTDIR)$(UNITDIR)/stormd.service" "$(DESTDIR)$(UNITDIR)/stormd@.service"
	rm -f "$(DESTDIR)$(BASHCOMPDIR)/stormctl" "$(DESTDIR)$(ZSHCOMPDIR)/_stormctl" "$(DESTDIR)$(FISHCOMPDIR)/stormctl.fish"

run:
	./scripts/run

test:
	./scripts/test

check-ops:
	./scripts/check-ops

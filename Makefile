# Punch: `make test` does all set-up from nothing; `make demo` starts a local network.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test check demo lint typecheck bench clean system-deps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

# System tools some tests drive (tmux for the real-terminal TUI test, iproute2/nftables for the NAT rig).
system-deps:
	@command -v tmux >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq tmux >/dev/null) || echo "tmux could not be installed; its test will skip"; \
	  else echo "tmux missing and not root: the tmux test will skip"; fi; }
	@# iproute2 + nftables build the NAT rig (tests/nat): network namespaces with masquerade;
	@# iproute2's tc (tbf) limits each host of the swarm rig (tests/support/swarm_rig.py)
	@{ command -v ip >/dev/null 2>&1 && command -v nft >/dev/null 2>&1; } || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && apt-get install -y -qq iproute2 nftables >/dev/null) || echo "nftables could not be installed; NAT tests will skip"; \
	  else echo "iproute2/nftables missing and not root: NAT tests will skip"; fi; }
	@# miniupnpd-nftables is the UPnP gateway of the rig's home router (tests/e2e/test_internet.py)
	@command -v miniupnpd >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq miniupnpd-nftables >/dev/null) \
	      || echo "miniupnpd could not be installed; the UPnP test will skip"; \
	  else echo "miniupnpd missing and not root: the UPnP test will skip"; fi; }
	@# chromium (Debian's) loads the web console in tests/monitor/test_attach_web.py, headless
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "chromium could not be installed; the web view test will skip"; \
	  else echo "chromium missing and not root: the web view test will skip"; fi; }

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy punch_net punch_tui punch_testnet

# The inner loop: lint, types and the unit tier (no sockets), well under 30 s.
check: lint typecheck
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

# Everything, from nothing (the CI command): lint, types, then unit, integration and e2e tiers.
test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/mypy punch_net punch_tui punch_testnet
	$(BIN)/python -m pytest -q -p no:cacheprovider

demo: $(STAMP)
	$(BIN)/python -m punch_tui.demo

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache

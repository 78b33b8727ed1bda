# tickhub developer commands. Everything a test needs is installed from here.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEPS   := $(VENV)/.deps-stamp
PYTEST_ARGS ?=

.PHONY: venv build test bench bench-fanout bench-peers bench-e2e bench-rss bench-bus bench-cluster bench-latency bench-memory bench-storm demo cluster-demo clean wheel

venv: $(DEPS)

# Build requirements first (no build isolation: the editable build uses the venv's
# pinned Cython and picows), then the package with its test extras.
$(DEPS): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "setuptools>=69" wheel "Cython>=3.1,<3.4" "picows==2.3.1"
	$(PY) -m pip install -q --no-build-isolation -e ".[test]"
	touch $@

# Compile the extensions in place (src/tickhub/_ext/*.so); generated C goes to build/cython.
build: $(DEPS)
	$(PY) setup.py -q build_ext --inplace -j 2

test: build
	$(PY) -m pytest $(PYTEST_ARGS)

# Benchmarks: run on demand, one at a time (see bench/README.md). Reports go to bench/results/.
# Micro benchmarks of the compiled hot path (pytest-benchmark), ns per message.
bench: build
	@mkdir -p bench/results
	$(PY) -m pytest bench/ --benchmark-only --benchmark-json=bench/results/micro.json -p no:cacheprovider -q
	@echo "report: bench/results/micro.json"

# Real-socket fan-out: tickhub vs picows one send() per client vs websockets.broadcast.
bench-fanout: build
	$(PY) bench/fanout.py --reps 3 --servers tickhub-relay,tickhub,picows-naive,websockets.broadcast --bursts 1,10

# The side-by-side campaign with uWebSockets.js, Bun and Node ws, as publishers and (uWS.js,
# Bun) as relays on tickhub's feeder (npm packages: bench/package.json); ~9 min.
bench-peers: build
	$(PY) bench/fanout.py --reps 5

# The whole hub: feeder -> tickhub serve -> 1000 clients; throughput and latency.
bench-e2e: build
	$(PY) bench/hub_e2e.py

# RSS per idle client connection (10,000 clients).
bench-rss: build
	$(PY) bench/idle_rss.py

# Added latency at 10/50/90 % of each server's saturation, tickhub relay vs uWS.js and Bun
# (relays on the same feeder, and publishers), N=1000 and 100, 3 reps; table and CDF plot in
# bench/results/latency.{md,png}; ~9 min.
bench-latency: build
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) bench/latency.py --reps 3

# RSS per idle connection at 1,000 / 10,000 / 19,000 clients, tickhub serve vs uWS.js vs Bun.
bench-memory: build
	$(PY) bench/memory.py

# 5,000 clients connecting within 2 s, then all leaving, 3 rounds: tickhub serve vs uWS.js.
bench-storm: build
	$(PY) bench/storm.py

# Upstream events/s through the Redis and Kafka buses into one gateway.
bench-bus: build
	$(PY) bench/bus.py

# The same load on 1 instance and on 3 instances behind the Redis bus.
bench-cluster: build
	$(PY) bench/cluster.py

wheel: $(DEPS)
	$(PY) -m pip wheel . --no-deps -w dist/

clean:
	rm -rf build dist src/tickhub/_ext/*.so src/*.egg-info .pytest_cache

# The hub on its embedded defaults with the built-in exchange simulator.
demo: build
	$(PY) -m tickhub demo

# Redis + the exchange simulator + three hubs on 127.0.0.1:8081-8083 (README "Scale-out").
cluster-demo: build
	$(PY) scripts/cluster_demo.py $(CLUSTER_ARGS)

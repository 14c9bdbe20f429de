# medrollup — the two commands a newcomer needs, and a few more.
.PHONY: demo demo-core test lint bench bench-quick bench-gpu bench-records bench-restart js-deps contracts gas-table

# The main job: the whole farm on this machine (nats-server, anvil with the
# contracts, the coordinator, two workers, Prometheus) under a realistic load
# of patients and doctors, bounded (DEMO_ARGS="--seconds 300", "--max-tx 500",
# "--concurrency 6", "--keep", "--ports auto"); then every transaction
# accounted for and a throughput snapshot (target/demo/throughput.json).
DEMO_ARGS ?=
demo:
	./scripts/services
	./scripts/contracts --install
	cargo build --release -p medrollup-coordinator -p medrollup-prover -p medrollup-client -p medrollup-demo
	target/release/medrollup-demo $(DEMO_ARGS)

# The rollup core alone on sample data: setup, batches, proofs, verification.
demo-core:
	cargo run --release -p medrollup-circuits --bin medrollup-circuits -- demo

# The test suite (installs the npm tools the tests compare against).
test:
	./scripts/test

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# Benchmarks: the prover engine against arkworks side by side, including the
# ark-groth16 baseline on the batch circuit (prover/BENCHMARKS.md).
bench:
	cargo bench -p medrollup-prover --bench engine

bench-quick:
	MEDROLLUP_BENCH_QUICK=1 cargo bench -p medrollup-prover --bench engine

# The GPU backend against the CPU backend on this machine's devices
# (prover/BENCHMARKS.md; scripts/gpu-check runs it on a GPU machine from
# binaries built elsewhere).
bench-gpu:
	MEDROLLUP_GPU_PROFILE=1 cargo bench -p medrollup-prover --bench gpu

# Records through storage: encrypt + store, fetch + decrypt, embedded store
# and a real IPFS node (client/BENCHMARKS.md).
bench-records:
	./scripts/ipfs
	cargo bench -p medrollup-client --bench records

# The coordinator's store, seals and restarts as the history grows
# (coordinator/BENCHMARKS.md; BATCHES=2000 by default).
bench-restart:
	MEDROLLUP_BENCH_BATCHES=$(or $(BATCHES),2000) cargo bench -p medrollup-coordinator --bench restart --profile dev

js-deps:
	./scripts/js-deps

# Regenerates the Solidity verifier, the forge fixtures and the compiled
# contracts from the keys (KEYS=dir for other keys than the canonical ones).
contracts:
	./scripts/contracts

# Gas per batch and per transaction on anvil for B = 4, 16, 64 (contracts/README.md).
gas-table:
	./scripts/gas-table

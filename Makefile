# `make run`: set up, prepare the embedded model, evaluate it on HumanEval with RLEF rollouts of up
# to 3 turns (the main job until the trainer lands). `make test`: set up, then lint and run the test suite.
.PHONY: setup run test lint

setup:
	@bash scripts/setup.sh

run: setup
	.venv/bin/proctor model prepare
	.venv/bin/proctor eval --dataset humaneval --turns 3 $(ARGS)

lint: setup
	.venv/bin/ruff check .

test: lint
	@.venv/bin/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure here" >&2; fi; exit $$rc

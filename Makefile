# The two commands of the README. Each sets up what it needs first (scripts/setup).
.PHONY: train test lint

train:
	./scripts/setup
	.venv/bin/jaxconv train

test:
	./scripts/setup --dev
	.venv/bin/python -m pytest -n 2 --dist worksteal -q

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

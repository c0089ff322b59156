# The two set-up commands of the README are `make demo` and `make test`; both bootstrap first.
OUT ?= demo-out
PYTEST ?= uv run pytest

.PHONY: bootstrap demo test unit integration lint bench

bootstrap:
	./scripts/bootstrap.sh

demo: bootstrap
	uv run federation demo --out $(OUT) $(ARGS)

test: bootstrap lint unit integration

unit:
	$(PYTEST) tests/unit -q

integration:
	$(PYTEST) tests/integration -q -m integration --durations=30

lint:
	uv run ruff check federation tests bench tools
	uv run ruff format --check federation tests bench tools
	uv run mypy
	uv run lint-imports
	uv run snakemake --lint --config node_config=config/examples/node.yaml study_config=config/examples/study.yaml
	find workflows -name '*.cwl' | sort | while read -r cwl; do uv run cwltool --quiet --validate "$$cwl" || exit 1; done

bench: bootstrap
	uv run python -m bench.node_pipeline
	uv run python -m bench.meta
	uv run python -m bench.report_plots

# The two set-up commands of the README. Each installs what is missing first.
.PHONY: run test deps bench

deps:
	@./Scripts/install-deps.sh

## Runs the example program: greedy text from the bundled model.
run: deps
	swift run --package-path Examples -c release quill generate "The licenses for most software are designed"

## Runs the test suite.
test: deps
	swift test --disable-xctest  # every test uses Swift Testing

## Runs the TensorCore benchmark (see Benchmarks/README.md).
bench: deps
	swift run --package-path Benchmarks -c release tensorcore-bench

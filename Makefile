# The two set-up commands of the README. Each installs what is missing first.
.PHONY: run test test-release sanitize deps bench

deps:
	@./Scripts/install-deps.sh

## Runs the example program: greedy text from the bundled model.
run: deps
	swift run --package-path Examples -c release quill generate "The licenses for most software are designed"

## Runs the test suite.
test: deps
	swift test --disable-xctest  # every test uses Swift Testing

## Runs the allocation tests, which count mallocs in the optimized token loop and are
## skipped in debug builds.
test-release: deps
	swift test -c release -Xswiftc -enable-testing --scratch-path .build-release --disable-xctest --filter AllocationTests

## Runs the test suite under ThreadSanitizer and AddressSanitizer (with LeakSanitizer);
## any report fails the run. Separate build folders keep the normal build untouched.
sanitize: deps
	TSAN_OPTIONS=halt_on_error=1 swift test --disable-xctest --sanitize=thread --scratch-path .build-tsan
	ASAN_OPTIONS=halt_on_error=1:detect_leaks=1 swift test --disable-xctest --sanitize=address --scratch-path .build-asan

## Runs the TensorCore benchmark (see Benchmarks/README.md).
bench: deps
	swift run --package-path Benchmarks -c release tensorcore-bench

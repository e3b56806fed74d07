# Convenience wrappers; the README's commands are ./dev.sh demo and ./dev.sh test (a fresh
# machine may not have make).
.PHONY: demo test bench
demo:
	./dev.sh demo
test:
	./dev.sh test
bench:
	./dev.sh bench

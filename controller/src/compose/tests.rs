//! End-to-end translation tests: whole compose files in, stack specs out.

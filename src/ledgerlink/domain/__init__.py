"""Pure domain rules: no I/O, no SQL, no HTTP. Everything here is unit-testable in isolation."""

"""Fuzzing of the request path (bytes -> decoding -> validation -> engines -> decisions -> response)."""

"""Turning request payloads into rows of the store's schema."""

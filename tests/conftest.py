"""Suite-wide settings."""

from knetflow.graph import capture_guard

# every call a compiled capture guard recognizes is checked against the full walk
capture_guard.VERIFY = True

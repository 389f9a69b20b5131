"""Compiling graphs into plans and running them."""

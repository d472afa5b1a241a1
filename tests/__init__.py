"""Test suite (a package, so that every test module has one import name)."""

"""Test support code: a real Label Studio server and a recording stand-in ML backend."""

"""The daemon side: watching, settling, the journal, the worker handle, the service loop.

Never imports the engine side or torch (tests/test_imports.py checks it).
"""

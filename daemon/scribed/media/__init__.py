"""Recordings: decoding, probing and speech-aware chunk planning (numpy, soundfile, PyAV; no torch)."""

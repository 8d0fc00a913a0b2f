"""scribed: a local transcription daemon for meeting recordings (Qwen3-ASR via transformers).

Importing this package (or any module other than :mod:`scribed.engine.qwen3`) never imports torch or
transformers: the daemon's main process stays light and the model lives in a worker process.
"""

__version__ = "0.1.0"

"""The engine side: the model, the pipeline and the worker process's main. Imports torch (lazily)."""

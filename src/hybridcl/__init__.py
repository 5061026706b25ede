__version__ = "0.1.0"

__all__ = ["__version__", "load_run"]


def __getattr__(name: str):
    # Lazy: `import hybridcl` stays cheap (no torch) until load_run is used.
    if name == "load_run":
        from hybridcl.inference.load import load_run

        return load_run
    raise AttributeError(f"module 'hybridcl' has no attribute {name!r}")

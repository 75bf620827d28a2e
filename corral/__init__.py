"""corral: disposable, least-privilege machines for AI coding agents."""

__version__ = "0.1.0"

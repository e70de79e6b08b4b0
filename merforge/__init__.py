"""merforge: builds multimodal emotion-recognition datasets."""

__version__ = "0.1.0"

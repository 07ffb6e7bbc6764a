"""almr: teach a pretrained LLM an additional language, with the mixture ratio and learning
rate chosen by measurement."""

__version__ = "0.1.0"

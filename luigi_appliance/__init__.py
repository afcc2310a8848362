"""luigi-appliance: a hardened, packaged Luigi central scheduler."""

__version__ = "0.1.0"

"""luigi-appliance: a hardened, packaged Luigi central scheduler."""

# The one version string: setup.cfg reads it, `make rpm` writes it into the spec it builds, and
# ansible/galaxy.yml repeats it (tests/unit/test_package_structure.py keeps them equal).
__version__ = "0.1.0"

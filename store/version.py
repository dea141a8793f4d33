"""The one version string: the installed distribution's (``pyproject.toml``)."""

from importlib.metadata import PackageNotFoundError, version

try:
    VERSION = version("interaction-store")
except PackageNotFoundError:  # run from a checkout that was never installed
    VERSION = "0+unknown"

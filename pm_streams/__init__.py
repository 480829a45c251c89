"""position-manager's stream processing: the Faust app, settings, agents and domain."""

from importlib import metadata


def version() -> str:
    """The installed package's version (`pm-streams --version`, `pm_build_info`)."""
    try:
        return metadata.version("position-manager")
    except metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"

"""Private APIs of dependencies, one module per dependency, each use with the version it was checked against."""

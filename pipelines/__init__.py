"""pipelines: the two stages composed, and the command-line entry points."""

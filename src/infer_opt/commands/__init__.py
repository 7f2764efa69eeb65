"""One module per `infer-opt` subcommand."""

"""Command line: parsing, dispatch and rendering, one module per family of subcommands."""

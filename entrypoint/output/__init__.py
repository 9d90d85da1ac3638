"""Service output: lines, prefixes, colour, log files, rings and the stdout writer."""

"""The control socket: protocol, server, operations and client."""

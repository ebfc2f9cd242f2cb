"""Command-line interface: `deepshield <command>`; one module per command."""

"""Optional integrations with outside platforms. Each module imports its platform lazily, inside the
functions that need it: importing deepshield (or running the CLI) never imports them."""

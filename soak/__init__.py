"""The fault soak (`make soak`): concurrent writers through `serve --workers 2` while
workers, the server and PostgreSQL are killed, restarted and frozen; then an
independent check of everything that was acknowledged. See `python -m soak --help`."""

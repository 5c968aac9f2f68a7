"""`python -m websocketd_py` is the same as the `websocketd-py` command."""

from .cli import main

if __name__ == "__main__":
    main()

"""``python -m gatescope`` (and ``torchrun ... -m gatescope``): the `gatescope` command line."""
from gatescope.cli import main

if __name__ == "__main__":
    main()

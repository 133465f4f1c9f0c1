"""``python -m implicitlab``: the command line (what ``torchrun -m implicitlab measure ...`` runs on each rank)."""

from .cli import main

if __name__ == "__main__":
    main()

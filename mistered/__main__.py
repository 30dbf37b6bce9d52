"""``python -m mistered`` runs the command line (needed by ``torchrun -m mistered train ...``)."""

from .cli import main

__all__: list[str] = []

if __name__ == "__main__":
    main(prog_name="mistered")

"""`python -m almr.cli …`, and `torchrun -m almr.cli cpt …` (how the sweep's launchers start each run)."""

from almr.cli import main

if __name__ == "__main__":
    main()

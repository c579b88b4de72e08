"""``python -m ifqa_loss``: the ``ifqa`` command line."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())

"""``python -m stillhouse``: the same command line as the ``stillhouse`` script."""

from stillhouse.pipelines.cli import main

if __name__ == "__main__":
    main()

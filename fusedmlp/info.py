"""``python -m fusedmlp.info``: print the build and run-time facts of fusedmlp.info()."""
from fusedmlp._info import main

if __name__ == "__main__":
    main()

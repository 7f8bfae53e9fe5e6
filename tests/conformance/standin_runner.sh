#!/bin/sh
# Stand-in for the Rust scenario runner: runs the Twisted driver in
# single-file mode.  Used to test differential.py itself.
exec "${PYTHON:-python3}" "$(dirname "$0")/twisted_driver.py" "$@"

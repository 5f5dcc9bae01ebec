#!/bin/sh
# Stands in for the unit tests when configure did not find Check.
echo "Check (libcheck) was not found by configure: install it (Debian: check) and re-run configure" >&2
exit 1

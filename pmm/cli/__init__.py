"""The command line edge: parse options, call one service, render. No SQL, no HTTP here."""
